"""Benchmark: iptables full and partial sync of N services x 10 endpoints, ours against bare iptables-restore.

Each size runs in its own subprocess (so "peak RSS" is that size's own peak) against a throwaway namespace
`kpb-<pid>-<n>` that is removed afterwards. For each size it measures, in the same run:

- plan: plan_node over the Cluster; render: render_iptables (for reference: a full sync streams the same
  rules into iptables-restore while rendering, kubeplane.proxy.iptables.stream); ours: IptablesProxier.sync
  end to end (plan + render + iptables-save + iptables-restore + conntrack check), first sync on an empty
  namespace;
- bare: `iptables-restore --noflush` of exactly the text our sync streamed, into a second empty namespace;
- partial (one endpoint of one service changed): our sync against a bare restore of the same partial text.

Run as root: `.venv/bin/python bench/bench_iptables.py [--sizes 1000 5000 10000] [--backend nft|legacy]`.
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import resource
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from kubeplane.model.objects import (  # noqa: E402
    SERVICE_NAME_LABEL,
    Cluster,
    Endpoint,
    EndpointPort,
    EndpointSlice,
    KubeProxyConfiguration,
    Node,
    NodeAddress,
    ObjectMeta,
    Service,
    ServicePort,
)
from kubeplane.netns.nsfs import create_netns, remove_netns  # noqa: E402
from kubeplane.proxy.iptables.proxier import IptablesProxier  # noqa: E402
from kubeplane.proxy.iptables.render import changed_service_ports, jump_rules, render_iptables  # noqa: E402
from kubeplane.proxy.iptables.stream import FullRestoreStream  # noqa: E402
from kubeplane.proxy.iptables.tools import IptablesBackend, IptablesTools  # noqa: E402
from kubeplane.proxy.plan import plan_node  # noqa: E402

ENDPOINTS_PER_SERVICE = 10
NODES = 4


def build_cluster(services: int, endpoint_shift: int = 0) -> Cluster:
    """`services` ClusterIP services (from 10.96.0.0/12 upwards), 10 endpoints each over 4 nodes;
    `endpoint_shift` moves the last endpoint of service 0 to a new address (the "one endpoint change")."""
    nodes = tuple(
        Node(
            ObjectMeta(name=f"node-{i}"),
            pod_cidrs=(f"10.{100 + i}.0.0/16",),
            addresses=(NodeAddress("InternalIP", f"198.51.100.{i + 2}"),),
        )
        for i in range(NODES)
    )
    svcs = []
    slices = []
    for s in range(services):
        name = f"svc-{s}"
        svcs.append(
            Service(
                ObjectMeta(name=name, namespace="bench"),
                selector={"app": name},
                cluster_ips=(f"10.{96 + s // 65536}.{s // 256 % 256}.{s % 256}",),
                ports=(ServicePort(port=80, name="http", target_port=8080),),
            )
        )
        endpoints = []
        for e in range(ENDPOINTS_PER_SERVICE):
            n = (s * ENDPOINTS_PER_SERVICE + e) % NODES
            host = s * ENDPOINTS_PER_SERVICE + e + (endpoint_shift if s == 0 and e == 9 else 0)
            address = f"10.{100 + n}.{host // 256 % 256}.{host % 256}"
            endpoints.append(Endpoint((address,), node_name=f"node-{n}"))
        slices.append(
            EndpointSlice(
                ObjectMeta(name=f"{name}-1", namespace="bench", labels={SERVICE_NAME_LABEL: name}),
                endpoints=tuple(endpoints),
                ports=(EndpointPort(port=8080, name="http"),),
            )
        )
    return Cluster(
        services=tuple(svcs),
        endpoint_slices=tuple(slices),
        nodes=nodes,
        proxy_config=KubeProxyConfiguration(cluster_cidr="10.100.0.0/14"),
    )


def timed_restore(tools: IptablesTools, text: str) -> float:
    started = time.perf_counter()
    tools.restore(text)
    return time.perf_counter() - started


def measure(services: int, backend: IptablesBackend) -> dict[str, float]:
    """One size, in this process; returns seconds and peak RSS (MiB)."""
    cluster = build_cluster(services)
    changed_cluster = build_cluster(services, endpoint_shift=50000)
    ours_ns, bare_ns = f"kpb-{os.getpid()}-ours", f"kpb-{os.getpid()}-bare"
    create_netns([ours_ns, bare_ns])
    try:
        gc.disable()  # as IptablesProxier.sync does while planning and rendering
        started = time.perf_counter()
        plan = plan_node(cluster, "node-0")
        plan_s = time.perf_counter() - started
        started = time.perf_counter()
        rendered = render_iptables(plan)
        render_s = time.perf_counter() - started
        stream = FullRestoreStream(plan, "IPv4", frozenset(), jump_rules("IPv4"))
        full_text = "".join(stream.chunks())
        gc.enable()

        proxier = IptablesProxier(ours_ns, "node-0", backend=backend)
        full = proxier.sync(cluster)
        assert full.ok and full.full, full.error
        bare_full_s = timed_restore(IptablesTools(bare_ns, backend=backend), full_text)

        partial = proxier.sync(changed_cluster)
        assert partial.ok and not partial.full, partial.error
        new_plan = plan_node(changed_cluster, "node-0")
        changed = changed_service_ports(plan.service_ports, new_plan.service_ports)
        new_rendered = render_iptables(new_plan, changed=changed)
        stale = rendered.active_nat_chains - new_rendered.active_nat_chains
        partial_text = new_rendered.with_stale_chains(stale)
        bare_partial_s = timed_restore(
            IptablesTools(bare_ns, backend=backend),
            partial_text.restore_text("filter") + partial_text.restore_text("nat"),
        )
    finally:
        remove_netns(ours_ns)
        remove_netns(bare_ns)
    return {
        "services": services,
        "plan_s": plan_s,
        "render_s": render_s,
        "ours_full_s": full.seconds,
        "bare_full_s": bare_full_s,
        "ours_partial_s": partial.seconds,
        "bare_partial_s": bare_partial_s,
        "nat_lines": full_text.count("\n"),
        "peak_rss_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[1000, 5000, 10000])
    parser.add_argument("--backend", choices=[b.value for b in IptablesBackend], default="nft")
    parser.add_argument("--one", type=int, help=argparse.SUPPRESS)
    args = parser.parse_args()
    backend = IptablesBackend(args.backend)
    if args.one is not None:
        print(json.dumps(measure(args.one, backend)))
        return
    rows = []
    for size in args.sizes:
        argv = [sys.executable, __file__, "--one", str(size), "--backend", backend.value]
        rows.append(json.loads(subprocess.run(argv, check=True, capture_output=True, text=True).stdout))
    header = (
        f"{'services':>8} {'lines':>8} {'plan s':>7} {'render s':>8} {'ours full s':>11} {'bare full s':>11} "
        f"{'overhead':>8} {'ours part s':>11} {'bare part s':>11} {'peak MiB':>8}"
    )
    print(f"iptables backend: {backend.value}; {ENDPOINTS_PER_SERVICE} endpoints per service")
    print(header)
    for r in rows:
        overhead = (r["ours_full_s"] - r["bare_full_s"]) / r["bare_full_s"] * 100
        print(
            f"{r['services']:>8} {r['nat_lines']:>8} {r['plan_s']:>7.3f} {r['render_s']:>8.3f} "
            f"{r['ours_full_s']:>11.3f} {r['bare_full_s']:>11.3f} {overhead:>7.0f}% "
            f"{r['ours_partial_s']:>11.3f} {r['bare_partial_s']:>11.3f} {r['peak_rss_mib']:>8.0f}"
        )


if __name__ == "__main__":
    main()
