"""How long explain takes as a cluster grows: parse the rendered rules, walk one packet, render the text.

Run: `.venv/bin/python bench/bench_trace.py [--sizes 10,100,1000,5000] [--repeat 5]`

Each cluster (bench/synthetic.py) has N ClusterIP services with two endpoints each, one on each of two
nodes; the walk runs on node-0. The packet goes from an address in node-0's podCIDR to the service whose
KUBE-SERVICES rule comes last, so the walk tests (and, at the detailed level, records a miss for) every
other service's rule: the worst case for one lookup. Times are the median of
`--repeat` runs; `kubeplane trace` pays parse + walk + text once per invocation.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from synthetic import SyntheticLayout, node_name, pod_ip, synthetic_cluster  # noqa: E402

from kubeplane.proxy.iptables.render import render_iptables  # noqa: E402
from kubeplane.proxy.plan import plan_node  # noqa: E402
from kubeplane.trace.explain import explain_packet  # noqa: E402
from kubeplane.trace.packet import Packet, classify_source, node_context  # noqa: E402
from kubeplane.trace.render_text import render_text  # noqa: E402
from kubeplane.trace.ruleset import parse_ruleset  # noqa: E402

NODE = node_name(0)
SOURCE = pod_ip(0, 250_000)  # in node-0's podCIDR, above every endpoint address


def median_ms(action: Callable[[], object], repeat: int) -> tuple[float, None]:
    times = []
    for _ in range(repeat):
        started = time.perf_counter()
        action()
        times.append((time.perf_counter() - started) * 1000)
    return statistics.median(times), None


def measure(size: int, repeat: int) -> str:
    """One table row for a cluster of `size` services."""
    cluster = synthetic_cluster(SyntheticLayout(size, endpoints_per_service=2, nodes=2))
    plan = plan_node(cluster, NODE)
    rendered = render_iptables(plan)
    parse_ms, _ = median_ms(lambda: parse_ruleset(rendered.filter, rendered.nat), repeat)
    ruleset = parse_ruleset(rendered.filter, rendered.nat)
    context = node_context(cluster, NODE)
    last = plan.service_ports[-1]  # rendered in name order: its KUBE-SERVICES rule comes last
    packet = Packet(SOURCE, 40000, last.cluster_ip, last.port)
    source = classify_source(cluster, NODE, packet.src)
    walk_ms, _ = median_ms(lambda: explain_packet(ruleset, context, packet, source), repeat)
    explanation = explain_packet(ruleset, context, packet, source)
    text_ms, _ = median_ms(lambda: render_text(explanation), repeat)
    rules = sum(len(c.rules) for t in ruleset.tables.values() for c in t.chains.values())
    steps = len(explanation.primary.steps)
    return f"{size:>8} {rules:>7} {parse_ms:>9.1f} {walk_ms:>8.1f} {text_ms:>8.1f} {steps:>6}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", default="10,100,1000,5000")
    parser.add_argument("--repeat", type=int, default=5)
    args = parser.parse_args()
    print(f"{'services':>8} {'rules':>7} {'parse ms':>9} {'walk ms':>8} {'text ms':>8} {'steps':>6}")
    for size in (int(s) for s in args.sizes.split(",")):
        print(measure(size, args.repeat), flush=True)


if __name__ == "__main__":
    main()
