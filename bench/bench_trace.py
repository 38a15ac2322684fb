"""How long explain takes as a cluster grows: parse the rendered rules, walk one packet, render the text.

Run: `.venv/bin/python bench/bench_trace.py [--sizes 10,100,1000,5000] [--repeat 5]`

Each cluster has N ClusterIP services with two endpoints each on a two-node cluster. The packet goes from a
pod to the service whose KUBE-SERVICES rule comes last, so the walk tests (and, at the detailed level,
records a miss for) every other service's rule: the worst case for one lookup. Times are the median of
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
from kubeplane.proxy.iptables.render import render_iptables  # noqa: E402
from kubeplane.proxy.plan import plan_node  # noqa: E402
from kubeplane.trace.explain import explain_packet  # noqa: E402
from kubeplane.trace.packet import Packet, classify_source, node_context  # noqa: E402
from kubeplane.trace.render_text import render_text  # noqa: E402
from kubeplane.trace.ruleset import parse_ruleset  # noqa: E402


def cluster_of(services: int) -> Cluster:
    nodes = tuple(
        Node(
            ObjectMeta(f"node-{i}"),
            (f"10.244.{i}.0/24",),
            (NodeAddress("InternalIP", f"198.51.100.{i + 1}"),),
        )
        for i in (1, 2)
    )
    made, slices = [], []
    for index in range(services):
        name = f"svc-{index}"
        ip = f"10.96.{index // 250}.{index % 250 + 2}"
        made.append(
            Service(
                ObjectMeta(name, "bench"),
                cluster_ips=(ip,),
                ports=(ServicePort(80, name="http", target_port=8080),),
            )
        )
        endpoints = tuple(Endpoint((f"10.244.{n}.{index % 250 + 2}",), node_name=f"node-{n}") for n in (1, 2))
        slices.append(
            EndpointSlice(
                ObjectMeta(f"{name}-1", "bench", labels={SERVICE_NAME_LABEL: name}),
                endpoints=endpoints,
                ports=(EndpointPort(8080, name="http"),),
            )
        )
    return Cluster(
        services=tuple(made),
        endpoint_slices=tuple(slices),
        nodes=nodes,
        proxy_config=KubeProxyConfiguration(cluster_cidr="10.244.0.0/16"),
    )


def median_ms(action: Callable[[], object], repeat: int) -> tuple[float, None]:
    times = []
    for _ in range(repeat):
        started = time.perf_counter()
        action()
        times.append((time.perf_counter() - started) * 1000)
    return statistics.median(times), None


def measure(size: int, repeat: int) -> str:
    """One table row for a cluster of `size` services."""
    cluster = cluster_of(size)
    rendered = render_iptables(plan_node(cluster, "node-1"))
    parse_ms, _ = median_ms(lambda: parse_ruleset(rendered.filter, rendered.nat), repeat)
    ruleset = parse_ruleset(rendered.filter, rendered.nat)
    context = node_context(cluster, "node-1")
    last = next(s for s in cluster.services if s.meta.name == f"svc-{size - 1}")
    packet = Packet("10.244.1.200", 40000, last.cluster_ip or "", 80)
    source = classify_source(cluster, "node-1", packet.src)
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
