"""Change -> rules programmed and DNS answering, at 1k services x 10 endpoints (root; builds a small lab).

A daemon runs in-process on a two-node lab whose manifests hold SERVICES selectorless Services, each with an
EndpointSlice of ENDPOINTS addresses (the addresses need no pods: the proxy programs them regardless). Each
measured change goes through the daemon's HTTP API, as `kubeplane apply` sends it, and is timed until

- rules: every node's proxy has programmed the store version the change produced (iptables-restore done);
- dns:   a query sent from a pod's namespace to the kube-dns Service IP answers the new name.

Two kinds of change: a new Service with its slice (rules + DNS), and an existing Service's slice losing one
endpoint and gaining another (rules). Prints p50/p99/max per phase in milliseconds.

    sudo .venv/bin/python bench/bench_latency.py [--services 1000] [--endpoints 10] [--changes 50]
"""

from __future__ import annotations

import argparse
import asyncio
import ipaddress
import logging
import statistics
import tempfile
import time
from pathlib import Path

from kubeplane.daemon.app import Daemon, DaemonOptions
from kubeplane.daemon.client import DaemonClient
from kubeplane.netns.clients import resolve
from kubeplane.testing import unique_lab_name

NAMESPACE = "bench"
DNS_POLL_SECONDS = 0.002
CHANGE_TIMEOUT_SECONDS = 30.0

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
    """(apply returned, rules programmed on every node, DNS answering) in seconds from the request."""
    started = time.perf_counter()
    outcome = await asyncio.to_thread(client.apply, text, "bench.yaml")
    applied = time.perf_counter() - started
    await daemon.wait_rules(outcome.version, CHANGE_TIMEOUT_SECONDS)
    programmed = time.perf_counter() - started
    if dns_name is None:
        return applied, programmed
    netns = daemon.lab.pod_netns(NAMESPACE, "client")

    def poll_dns() -> None:
        deadline = time.monotonic() + CHANGE_TIMEOUT_SECONDS
        while True:
            try:
                resolve(netns, dns_name, timeout=0.5)
                return
            except OSError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(DNS_POLL_SECONDS)

    await asyncio.to_thread(poll_dns)
    return applied, programmed, time.perf_counter() - started


def row(label: str, samples: list[float]) -> str:
    ms = [s * 1000 for s in samples]
    return (
        f"{label:<34} {len(ms):>5} {statistics.median(ms):>9.1f} {percentile(ms, 0.99):>9.1f} {max(ms):>9.1f}"
    )


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
        finally:
            await daemon.stop()
    print(f"\nkubeplane change latency: {services} services x {endpoints} endpoints, 2 nodes, iptables")
    print(f"startup (load, lab up, first sync of both nodes): {startup:.2f} s\n")
    print(f"{'phase (ms from apply request)':<34} {'n':>5} {'p50':>9} {'p99':>9} {'max':>9}")
    print(row("new service: apply accepted", [a[0] for a in added]))
    print(row("new service: rules on all nodes", [a[1] for a in added]))
    print(row("new service: DNS answers", [a[2] for a in added]))
    print(row("endpoint swap: apply accepted", [m[0] for m in moved]))
    print(row("endpoint swap: rules on all nodes", [m[1] for m in moved]))


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
