"""IPVS mode sync cost: IpvsProxier full syncs of 1k / 5k / 10k services x 10 endpoints, one endpoint change
at the largest size, and `ipvsadm-restore` loading the same virtual and real servers, in the same kernel.

Run: `.venv/bin/python bench/bench_ipvs.py [--sizes 1000,5000,10000]`. IPVS needs a kernel with IP_VS: on a
host without it the script re-runs itself inside the user-mode Linux kernel (tests/uml/run.py), which
prints one SKIP line if that cannot run either. Each size gets a fresh node namespace (loopback and a node
address only, no lab): the proxier's sync includes the plan, kube-ipvs0 addresses, ipsets, iptables rules
and the IPVS netlink changes; ipvsadm-restore only loads IPVS (no VIPs, sets or rules), so it is the floor
for the IPVS part alone. Numbers from UML are slower than on a native kernel (every syscall is a ptrace
round trip), but both columns pay that alike.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from synthetic import (  # noqa: E402
    SyntheticLayout,
    node_ip,
    node_name,
    synthetic_cluster,
    with_one_endpoint_moved,
)

from kubeplane.model.objects import Cluster  # noqa: E402
from kubeplane.proxy.ipvs.desired import desired_ipvs_state  # noqa: E402
from kubeplane.proxy.ipvs.proxier import IpvsProxier  # noqa: E402
from kubeplane.proxy.plan import plan_node  # noqa: E402

ENDPOINTS_PER_SERVICE = 10
# The proxied node hosts no endpoint: every real server is on the other node, as for most services of a
# large cluster.
PROXIED_NODE = node_name(0)
NODE_IP = node_ip(0)


def build_cluster(services: int) -> Cluster:
    layout = SyntheticLayout(services, ENDPOINTS_PER_SERVICE, nodes=2, endpoint_nodes=(1,), mode="ipvs")
    return synthetic_cluster(layout)


def make_node_netns(name: str) -> None:
    subprocess.run(["ip", "netns", "add", name], check=True)
    for argv in (
        ["ip", "link", "set", "lo", "up"],
        ["ip", "link", "add", "eth0", "type", "dummy"],
        ["ip", "addr", "add", f"{NODE_IP}/24", "dev", "eth0"],
        ["ip", "link", "set", "eth0", "up"],
        ["ip", "route", "add", "10.0.0.0/8", "dev", "eth0"],
    ):
        subprocess.run(["ip", "-n", name, *argv[1:]] if argv[0] == "ip" else argv, check=True)


def ipvsadm_rules(cluster: Cluster) -> str:
    plan = plan_node(cluster, PROXIED_NODE)
    lines = []
    for vs in desired_ipvs_state(plan, "IPv4").services:
        address = f"{vs.key.address}:{vs.key.port}"
        lines.append(f"-A -t {address} -s {vs.server.scheduler}")
        lines.extend(f"-a -t {address} -r {real} -m -w {real.weight}" for real in vs.real_servers)
    return "\n".join(lines) + "\n"


def time_ipvsadm_restore(netns: str, rules: str) -> float:
    with tempfile.TemporaryFile("w+") as rules_file:
        rules_file.write(rules)
        rules_file.seek(0)
        started = time.perf_counter()
        subprocess.run(["ip", "netns", "exec", netns, "ipvsadm-restore"], stdin=rules_file, check=True)
        return time.perf_counter() - started


def run_benchmark(sizes: list[int]) -> None:
    prefix = f"kpbench-{os.getpid()}"
    rows = []
    change_row = None
    for size in sizes:
        cluster = build_cluster(size)
        started = time.perf_counter()
        plan = plan_node(cluster, PROXIED_NODE)
        desired_ipvs_state(plan, "IPv4")
        pure_seconds = time.perf_counter() - started
        proxier_ns, restore_ns = f"{prefix}-{size}-p", f"{prefix}-{size}-r"
        try:
            make_node_netns(proxier_ns)
            make_node_netns(restore_ns)
            proxier = IpvsProxier(proxier_ns, PROXIED_NODE)
            result = proxier.sync(cluster)
            assert result.ok, result.errors
            if size == max(sizes):  # right away: after full_sync_period (60 s) a sync reads IPVS back
                changed = proxier.sync(with_one_endpoint_moved(cluster))
                assert changed.ok, changed.errors
                change_row = (size, changed.seconds, changed.ipvs_operations, changed.ipset_changes)
            restore_seconds = time_ipvsadm_restore(restore_ns, ipvsadm_rules(cluster))
            rows.append(
                (
                    size,
                    result.real_servers,
                    result.seconds,
                    pure_seconds,
                    restore_seconds,
                    result.ipvs_operations,
                )
            )
        finally:
            for netns in (proxier_ns, restore_ns):
                subprocess.run(["ip", "netns", "del", netns], check=False)
    print(f"IPVS mode, {ENDPOINTS_PER_SERVICE} endpoints per service, kernel {os.uname().release}")
    header = ("services", "reals", "full sync s", "(plan s)", "ipvsadm-restore s", "ipvs ops")
    widths = (8, 7, 11, 9, 17, 9)
    print(" ".join(f"{title:>{width}}" for title, width in zip(header, widths, strict=True)))
    for size, reals, sync_s, pure_s, restore_s, ops in rows:
        print(f"{size:>8} {reals:>7} {sync_s:>11.2f} {pure_s:>9.2f} {restore_s:>17.2f} {ops:>9}")
    if change_row is not None:
        size, seconds, ops, set_changes = change_row
        print(f"one endpoint change at {size} services: {seconds:.2f} s", end=" ")
        print(f"({ops} ipvs ops, {set_changes} ipset changes)")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sizes", default="1000,5000,10000", help="comma-separated service counts")
    args = parser.parse_args()
    sizes = [int(s) for s in args.sizes.split(",")]
    if not Path("/proc/net/ip_vs").exists():
        runner = ROOT / "tests" / "uml" / "run.py"
        argv = [
            sys.executable,
            str(runner),
            "--mem",
            "2G",
            "--",
            sys.executable,
            __file__,
            "--sizes",
            args.sizes,
        ]
        return subprocess.run(argv, cwd=ROOT).returncode
    run_benchmark(sizes)
    return 0


if __name__ == "__main__":
    sys.exit(main())
