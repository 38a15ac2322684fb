"""Change -> cluster DNS answering, at SERVICES services x ENDPOINTS endpoints (no root, loopback only).

A DnsServer serves on 127.0.0.1 from its own event loop and follows a ClusterStore exactly as the daemon's
DNS does (`kubeplane.daemon.cluster_dns.follow_store_for_dns`). Each measured change is a `store.replace`
on that loop; a client thread, polling with one UDP query per millisecond, times until the answer shows
the change. Three kinds of change: a new Service with its EndpointSlice (its name starts resolving), an
endpoint replaced in an existing slice (the new endpoint's own name resolves), a Service deleted (its name
turns NXDOMAIN). The table also shows the server's own cost per update (prepare + install on the loop)
and, for comparison, a full zone and answer-table rebuild of the same cluster.

    .venv/bin/python bench/bench_dns_changes.py [--services 1000] [--endpoints 10] [--changes 50]
"""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import ipaddress
import logging
import socket
import statistics
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path

import dns.message
import dns.rcode

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from kubeplane.daemon.cluster_dns import follow_store_for_dns  # noqa: E402
from kubeplane.dns.answers import AnswerTable  # noqa: E402
from kubeplane.dns.server import DnsServer  # noqa: E402
from kubeplane.dns.zone import build_zone  # noqa: E402
from kubeplane.model.objects import (  # noqa: E402
    SERVICE_NAME_LABEL,
    Cluster,
    Endpoint,
    EndpointPort,
    EndpointSlice,
    ObjectMeta,
    Service,
    ServicePort,
)
from kubeplane.store import ClusterStore  # noqa: E402

NAMESPACE = "bench"
POLL_SECONDS = 0.001
CHANGE_TIMEOUT_SECONDS = 10.0


def service(index: int) -> Service:
    ip = str(ipaddress.IPv4Address("10.97.0.1") + index)
    return Service(
        ObjectMeta(f"svc-{index}", NAMESPACE), cluster_ips=(ip,), ports=(ServicePort(80, name="http"),)
    )


def endpoint_slice(index: int, endpoints: int, salt: int = 0) -> EndpointSlice:
    base = ipaddress.IPv4Address("10.244.0.0")
    addresses = [str(base + 256 + (index * endpoints + k + salt) % 60000) for k in range(endpoints)]
    meta = ObjectMeta(f"svc-{index}-1", NAMESPACE, labels={SERVICE_NAME_LABEL: f"svc-{index}"})
    return EndpointSlice(
        meta, endpoints=tuple(Endpoint((ip,)) for ip in addresses), ports=(EndpointPort(8080, name="http"),)
    )


def synthetic_cluster(services: int, endpoints: int) -> Cluster:
    return Cluster(
        services=tuple(service(i) for i in range(services)),
        endpoint_slices=tuple(endpoint_slice(i, endpoints) for i in range(services)),
    )


def poll_until(address: tuple[str, int], name: str, done: Callable[[dns.message.Message], bool]) -> float:
    """Query `name` (A) every POLL_SECONDS until `done(response)`; the perf_counter time it first was."""
    deadline = time.monotonic() + CHANGE_TIMEOUT_SECONDS
    query = dns.message.make_query(name, "A")
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.settimeout(0.2)
        while time.monotonic() < deadline:
            query.id = (query.id + 1) & 0xFFFF
            sock.sendto(query.to_wire(), address)
            try:
                wire = sock.recv(4096)
            except TimeoutError:
                continue
            if done(dns.message.from_wire(wire)):
                return time.perf_counter()
            time.sleep(POLL_SECONDS)
    raise TimeoutError(f"{name} did not change within {CHANGE_TIMEOUT_SECONDS}s")


def resolves(response: dns.message.Message) -> bool:
    return response.rcode() == dns.rcode.NOERROR and bool(response.answer)


def nxdomain(response: dns.message.Message) -> bool:
    return response.rcode() == dns.rcode.NXDOMAIN


async def timed_change(
    store: ClusterStore, server: DnsServer, edit: Cluster, name: str, done: Callable[..., bool]
) -> tuple[float, float]:
    """Seconds from `store.replace(edit)` until a client sees `done` for `name`, and the server's own cost
    for the update (prepare + install)."""
    address = server.address
    assert address is not None
    finished: list[float] = []
    errors: list[BaseException] = []

    def client() -> None:
        try:
            finished.append(poll_until(address, name, done))
        except BaseException as error:  # reported by the coroutine below
            errors.append(error)

    thread = threading.Thread(target=client)
    started = time.perf_counter()
    store.replace(edit)
    thread.start()
    while thread.is_alive():
        await asyncio.sleep(POLL_SECONDS)
    if errors:
        raise errors[0]
    timing = server.last_update
    assert timing is not None
    return finished[0] - started, timing.prepare_seconds + timing.install_seconds


def percentile(values: list[float], fraction: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(round(fraction * (len(ordered) - 1))))]


def row(label: str, samples: list[tuple[float, float]], column: int = 0) -> str:
    seconds = [sample[column] for sample in samples]
    ms = [s * 1000 for s in seconds]
    return (
        f"{label:<34} {len(ms):>5} {statistics.median(ms):>9.1f} {percentile(ms, 0.99):>9.1f} {max(ms):>9.1f}"
    )


async def run(services: int, endpoints: int, changes: int) -> None:
    cluster = synthetic_cluster(services, endpoints)
    started = time.perf_counter()
    AnswerTable(build_zone(cluster), chase_upstream=False)
    full_rebuild = time.perf_counter() - started
    store = ClusterStore(cluster)
    async with DnsServer(store.cluster) as server:
        assert server.address is not None
        follower = asyncio.create_task(follow_store_for_dns(store, server, lambda version: None))
        try:
            added, swapped, deleted = [], [], []
            for n in range(changes):
                index = services + n
                edit = dataclasses.replace(
                    store.cluster,
                    services=(*store.cluster.services, service(index)),
                    endpoint_slices=(*store.cluster.endpoint_slices, endpoint_slice(index, endpoints)),
                )
                name = f"svc-{index}.{NAMESPACE}.svc.cluster.local."
                added.append(await timed_change(store, server, edit, name, resolves))
            for n in range(changes):
                index = (n * 37) % services
                moved = endpoint_slice(index, endpoints, salt=7 + n)
                slices = tuple(
                    moved if s.meta.name == moved.meta.name else s for s in store.cluster.endpoint_slices
                )
                label = moved.endpoints[-1].addresses[0].replace(".", "-")
                name = f"{label}.svc-{index}.{NAMESPACE}.svc.cluster.local."
                edit = dataclasses.replace(store.cluster, endpoint_slices=slices)
                swapped.append(await timed_change(store, server, edit, name, resolves))
            for n in range(changes):
                index = (n * 53 + 11) % services
                kept = tuple(s for s in store.cluster.services if s.meta.name != f"svc-{index}")
                edit = dataclasses.replace(store.cluster, services=kept)
                name = f"svc-{index}.{NAMESPACE}.svc.cluster.local."
                deleted.append(await timed_change(store, server, edit, name, nxdomain))
        finally:
            follower.cancel()
            await asyncio.gather(follower, return_exceptions=True)
    print(f"\nkubeplane DNS change latency: {services} services x {endpoints} endpoints, UDP on loopback")
    print(f"full zone + answer table rebuild of the same cluster: {full_rebuild * 1000:.0f} ms\n")
    print(f"{'ms from store change':<34} {'n':>5} {'p50':>9} {'p99':>9} {'max':>9}")
    print(row("new service: name answers", added))
    print(row("endpoint swap: new endpoint answers", swapped))
    print(row("service deleted: NXDOMAIN", deleted))
    print(row("server update cost (all changes)", added + swapped + deleted, column=1))


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
