"""Lab bring-up and teardown: 3 nodes x 30 pods (each with an HTTP and a UDP echo), as root.

Prints wall time of `Lab.up` (namespaces, links, routes, /etc/netns files, supervisor listening on every
port) and `Lab.down`, the supervisor's peak RSS (VmHWM), and one cross-node request as a liveness check.
Run: `.venv/bin/python bench/bench_lab.py [--nodes 3] [--pods-per-node 30] [--runs 3]`.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from kubeplane.netns.demo_cluster import demo_cluster  # noqa: E402
from kubeplane.netns.lab import Lab  # noqa: E402
from kubeplane.testing import unique_lab_name  # noqa: E402


def peak_rss_kib(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1])
    return 0


def one_run(nodes: int, pods_per_node: int) -> tuple[float, float, int, int]:
    cluster = demo_cluster(nodes=nodes, pods_per_node=pods_per_node)
    lab = Lab(unique_lab_name())
    try:
        started = time.perf_counter()
        lab.up(cluster)
        up_seconds = time.perf_counter() - started
        pid = lab.store.load().supervisor_pid
        assert pid is not None
        last = f"10.244.{nodes}.{pods_per_node + 1}"
        reply = lab.http_get("default/echo-1-0", f"http://{last}:8080/")
        assert reply["podIP"] == last, reply
        rss = peak_rss_kib(pid)
        ready = len(lab.ready_pods())
    finally:
        started = time.perf_counter()
        lab.down()
        down_seconds = time.perf_counter() - started
    return up_seconds, down_seconds, rss, ready


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--nodes", type=int, default=3)
    parser.add_argument("--pods-per-node", type=int, default=30)
    parser.add_argument("--runs", type=int, default=3)
    args = parser.parse_args()
    if os.geteuid() != 0:
        sys.exit("bench_lab needs root (network namespaces)")
    runs = [one_run(args.nodes, args.pods_per_node) for _ in range(args.runs)]
    pods = args.nodes * args.pods_per_node
    netns = pods + args.nodes + 2
    print(
        f"lab: {args.nodes} nodes x {args.pods_per_node} pods ({netns} netns), {args.runs} runs, "
        f"{os.cpu_count()} CPUs"
    )
    print(f"{'metric':<28} {'median':>10} {'max':>10}  target")
    rows = [
        ("up (s)", [r[0] for r in runs], "<= 10"),
        ("down (s)", [r[1] for r in runs], "<= 5"),
        ("supervisor peak RSS (MiB)", [r[2] / 1024 for r in runs], ""),
        ("pods serving", [float(r[3]) for r in runs], f"{pods}"),
    ]
    for name, values, target in rows:
        print(f"{name:<28} {statistics.median(values):>10.2f} {max(values):>10.2f}  {target}")


if __name__ == "__main__":
    main()
