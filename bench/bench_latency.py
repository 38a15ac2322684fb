"""Change -> rules programmed and DNS answering, at 1k services x 10 endpoints (root; builds a small lab).

A daemon runs in-process on a two-node lab whose manifests hold SERVICES selectorless Services, each with an
EndpointSlice of ENDPOINTS addresses (the addresses need no pods: the proxy programs them regardless). Each
measured change goes through the daemon's HTTP API, as `kubeplane apply` sends it, and is timed until

- rules: every node's proxy has programmed the store version the change produced (iptables-restore done);
- dns:   a query sent from a pod's namespace to the kube-dns Service IP answers the new name.

Two kinds of change: a new Service with its slice (rules + DNS), and an existing Service's slice losing one
endpoint and gaining another (rules). Prints p50/p99/max per phase in milliseconds.

Then, in the same run, the floor the kernel tools set: the final snapshot is fully synced into a scratch
namespace per iptables backend (nft, legacy), and a bare `iptables-restore --noflush` of one service's
partial sync is timed, in kube-proxy's layout (filter table and shared nat chains rewritten) and in ours
(unchanged shared chains left out), next to a bare process spawn in the namespace.

    sudo .venv/bin/python bench/bench_latency.py [--services 1000] [--endpoints 10] [--changes 50]
"""

from __future__ import annotations

import argparse
import asyncio
import functools
import ipaddress
import logging
import os
import statistics
import tempfile
import time
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path

from kubeplane.daemon.app import Daemon, DaemonOptions
from kubeplane.daemon.client import DaemonClient
from kubeplane.daemon.http import ChangeOutcome
from kubeplane.model.objects import Cluster, Endpoint
from kubeplane.netns.clients import resolve
from kubeplane.netns.nsfs import create_netns, remove_netns
from kubeplane.netns.run import run_in_netns
from kubeplane.proxy.iptables.partial import changed_ports, partial_restore
from kubeplane.proxy.iptables.proxier import IptablesProxier
from kubeplane.proxy.iptables.render import node_context, render_iptables
from kubeplane.proxy.iptables.tools import IptablesBackend, IptablesTools
from kubeplane.proxy.plan import plan_node
from kubeplane.testing import unique_lab_name

NAMESPACE = "bench"
DNS_POLL_SECONDS = 0.002
CHANGE_TIMEOUT_SECONDS = 30.0
FLOOR_REPEATS = 15

CLUSTER = """apiVersion: v1
kind: Node
metadata: {name: node-a}
---
apiVersion: v1
kind: Node
metadata: {name: node-b}
---
apiVersion: v1
kind: Namespace
metadata: {name: bench}
---
apiVersion: v1
kind: Pod
metadata: {name: client, namespace: bench}
spec: {nodeName: node-a, containers: [{name: c}]}
"""


def service_ip(index: int) -> str:
    return str(ipaddress.IPv4Address("10.97.0.0") + index + 1)


def endpoint_ips(index: int, count: int, salt: int = 0) -> list[str]:
    base = ipaddress.IPv4Address("10.244.0.0")
    return [str(base + 256 * (1 + (k % 2)) + (index * count + k + salt) % 250 + 2) for k in range(count)]


def service_manifest(name: str, index: int, endpoints: int, salt: int = 0) -> str:
    lines = [
        "apiVersion: v1",
        "kind: Service",
        f"metadata: {{name: {name}, namespace: {NAMESPACE}}}",
        f"spec: {{clusterIP: {service_ip(index)}, ports: [{{name: http, port: 80}}]}}",
        "---",
        "apiVersion: discovery.k8s.io/v1",
        "kind: EndpointSlice",
        f"metadata: {{name: {name}-1, namespace: {NAMESPACE},",
        f"  labels: {{kubernetes.io/service-name: {name}}}}}",
        "addressType: IPv4",
        "ports: [{name: http, port: 8080, protocol: TCP}]",
        "endpoints:",
    ]
    for k, ip in enumerate(endpoint_ips(index, endpoints, salt)):
        lines.append(f"  - {{addresses: [{ip}], nodeName: node-{'ab'[k % 2]}, conditions: {{ready: true}}}}")
    return "\n".join(lines) + "\n"


def percentile(values: list[float], fraction: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(round(fraction * (len(ordered) - 1))))]


async def timed_change(
    daemon: Daemon, client: DaemonClient, text: str, dns_name: str | None
) -> tuple[float, ...]:
    """(apply returned to the client, rules programmed on every node, DNS answering) in seconds from the
    request; the rules and DNS are timed at once, each on its own, once the apply has returned."""
    started = time.perf_counter()

    def apply() -> tuple[ChangeOutcome, float]:
        # Timed in the client's thread: back on the loop, the answer would wait for the syncs it started.
        outcome = client.apply(text, "bench.yaml")
        return outcome, time.perf_counter() - started

    outcome, applied = await asyncio.to_thread(apply)

    async def rules_programmed() -> float:
        await daemon.wait_rules(outcome.version, CHANGE_TIMEOUT_SECONDS)
        return time.perf_counter() - started

    if dns_name is None:
        return applied, await rules_programmed()
    netns = daemon.lab.pod_netns(NAMESPACE, "client")

    def dns_answering() -> float:
        deadline = time.monotonic() + CHANGE_TIMEOUT_SECONDS
        while True:
            try:
                resolve(netns, dns_name, timeout=0.5)
                return time.perf_counter() - started
            except OSError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(DNS_POLL_SECONDS)

    programmed, answering = await asyncio.gather(rules_programmed(), asyncio.to_thread(dns_answering))
    return applied, programmed, answering


def row(label: str, samples: list[float]) -> str:
    ms = [s * 1000 for s in samples]
    return (
        f"{label:<34} {len(ms):>5} {statistics.median(ms):>9.1f} {percentile(ms, 0.99):>9.1f} {max(ms):>9.1f}"
    )


def with_one_endpoint_moved(cluster: Cluster) -> Cluster:
    """`cluster` with the first endpoint of its first slice at another address (one service changes)."""
    first = cluster.endpoint_slices[0]
    moved = Endpoint(addresses=("10.244.9.9",), node_name=first.endpoints[0].node_name)
    changed = replace(first, endpoints=(moved, *first.endpoints[1:]))
    return replace(cluster, endpoint_slices=(changed, *cluster.endpoint_slices[1:]))


def timed_ms(action: Callable[[], object]) -> list[float]:
    samples = []
    for _ in range(FLOOR_REPEATS):
        started = time.perf_counter()
        action()
        samples.append((time.perf_counter() - started) * 1000)
    return samples


def restore_floor(cluster: Cluster, node: str) -> list[str]:
    """Bare iptables-restore of one service's partial sync against a fully synced scratch namespace."""
    before, after = plan_node(cluster, node), plan_node(with_one_endpoint_moved(cluster), node)
    changed = changed_ports(before.service_ports, after.service_ports)
    active_before = render_iptables(before, "IPv4").active_nat_chains
    stale = active_before - render_iptables(after, "IPv4").active_nat_chains
    rendered = render_iptables(after, "IPv4", changed=changed).with_stale_chains(stale)
    kube_proxy_layout = rendered.restore_text("filter") + rendered.restore_text("nat")
    context, skeleton = node_context(after, "IPv4"), render_iptables(replace(after, service_ports=()), "IPv4")
    settled = partial_restore(before.service_ports, (), context, skeleton, None, active_before)
    ours = partial_restore(after.service_ports, changed, context, skeleton, settled, active_before).text
    lines = []
    for backend in IptablesBackend:
        netns = f"kpb-latency-{os.getpid()}-{backend.value}"
        create_netns([netns])
        try:
            if not IptablesProxier(netns, node, backend=backend).sync(cluster).ok:
                raise RuntimeError(f"full sync into {netns} failed")
            tools = IptablesTools(netns, "IPv4", backend)
            for label, text in (
                ("kube-proxy layout", kube_proxy_layout),
                ("shared left out", ours),
            ):
                samples = timed_ms(functools.partial(tools.restore, text))
                lines.append(floor_row(f"{backend.value}: restore, {label}", text.count("\n"), samples))
            spawn = timed_ms(functools.partial(run_in_netns, netns, ["true"]))
            lines.append(floor_row(f"{backend.value}: spawn `true` in netns", 0, spawn))
        finally:
            remove_netns(netns)
    return lines


def floor_row(label: str, lines: int, ms: list[float]) -> str:
    return f"{label:<40} {lines:>6} {statistics.median(ms):>9.1f} {min(ms):>9.1f} {max(ms):>9.1f}"


async def run(services: int, endpoints: int, changes: int) -> None:
    with tempfile.TemporaryDirectory(prefix="kubeplane-bench-") as directory:
        manifests = Path(directory)
        (manifests / "cluster.yaml").write_text(CLUSTER)
        (manifests / "services.yaml").write_text(
            "---\n".join(service_manifest(f"svc-{i}", i, endpoints) for i in range(services))
        )
        daemon = Daemon(DaemonOptions(paths=(manifests,), lab=unique_lab_name()))
        started = time.perf_counter()
        await daemon.start()
        try:
            await daemon.wait_programmed(daemon.store.version, 120.0)
            startup = time.perf_counter() - started
            client = DaemonClient.for_lab(daemon.lab.name)
            added: list[tuple[float, ...]] = []
            for n in range(changes):
                name = f"new-{n}"
                text = service_manifest(name, services + n, endpoints)
                added.append(
                    await timed_change(daemon, client, text, f"{name}.{NAMESPACE}.svc.cluster.local")
                )
            moved: list[tuple[float, ...]] = []
            for n in range(changes):
                index = (n * 37) % services
                text = service_manifest(f"svc-{index}", index, endpoints, salt=n + 1)
                moved.append(await timed_change(daemon, client, text, None))
            final = daemon.store.cluster
        finally:
            await daemon.stop()
    floor = await asyncio.to_thread(restore_floor, final, "node-a")
    print(f"\nkubeplane change latency: {services} services x {endpoints} endpoints, 2 nodes, iptables")
    print(f"startup (load, lab up, first sync of both nodes): {startup:.2f} s\n")
    print(f"{'phase (ms from apply request)':<34} {'n':>5} {'p50':>9} {'p99':>9} {'max':>9}")
    print(row("new service: apply accepted", [a[0] for a in added]))
    print(row("new service: rules on all nodes", [a[1] for a in added]))
    print(row("new service: DNS answers", [a[2] for a in added]))
    print(row("endpoint swap: apply accepted", [m[0] for m in moved]))
    print(row("endpoint swap: rules on all nodes", [m[1] for m in moved]))
    print(f"\nfloor: one service's partial sync, bare iptables-restore --noflush, {FLOOR_REPEATS} runs (ms)")
    print(f"{'what':<40} {'lines':>6} {'p50':>9} {'min':>9} {'max':>9}")
    print("\n".join(floor))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--services", type=int, default=1000)
    parser.add_argument("--endpoints", type=int, default=10)
    parser.add_argument("--changes", type=int, default=50)
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING)
    asyncio.run(run(args.services, args.endpoints, args.changes))


if __name__ == "__main__":
    main()
