"""Cluster DNS inside the lab, asked by the real clients a pod runs: glibc (`getent`), `curl` and `dig`.

One daemon serves the manifests of tests/integration/dns_lab for the whole module. Every client runs in the
`shop/client` pod through `ip netns exec`, so it reads the pod's resolv.conf (search list, ndots:5, nameserver
10.96.0.10) and its queries take the cluster's path: pod -> kube-dns Service IP -> the node's DNAT rules ->
the DNS server listening in the `kube-system/coredns` pod's namespace. Names outside the cluster domain are
forwarded to an upstream on 127.0.0.1:10053 that exists only in the coredns pod's namespace (started here),
the way a resolver sidecar of CoreDNS would: only a forwarder that lives in that namespace can reach it.
The clients run as subprocesses awaited from threads: the DNS server answers on this module's event loop.
"""

from __future__ import annotations

import asyncio
import json
import re
import socket
import subprocess
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, cast

import dnslib
import pytest
import pytest_asyncio

from kubeplane.daemon.app import Daemon, DaemonOptions
from kubeplane.daemon.cluster_dns import DNS_NAMESPACE, DNS_POD_NAME
from kubeplane.dns.fake_upstream import FakeUpstream, ReceivedQuestion
from kubeplane.netns.nsfs import open_socket_in_netns
from kubeplane.testing import skip_unless_root, unique_lab_name

pytestmark = [pytest.mark.root, pytest.mark.asyncio(loop_scope="module")]

MANIFESTS = Path(__file__).parent / "dns_lab"
CLIENT = "shop/client"
NOT_READY_PODS = frozenset({"shop/db-2", "shop/peer-1"})  # pinned NotReady by their manifests
UPSTREAM_ADDRESS = ("127.0.0.1", 10053)  # the manifests' upstreamResolvers
# Two names, so the forwarding test cannot be answered from the cache the ExternalName test filled.
UPSTREAM_ANSWERS = {"api.payments.example.": ("203.0.113.80",), "ledger.example.": ("203.0.113.81",)}
SETTLE_SECONDS = 20.0
CLIENT_TIMEOUT_SECONDS = 15.0
CURL_REQUESTS = 20  # both web pods answer with probability 1 - 2 * 0.5**20


@dataclass(frozen=True)
class DigRecord:
    section: str  # ANSWER, AUTHORITY or ADDITIONAL
    owner: str
    rtype: str
    data: str


@dataclass(frozen=True)
class DigReply:
    status: str
    records: tuple[DigRecord, ...]

    def data(self, rtype: str, section: str = "ANSWER") -> list[str]:
        return [r.data for r in self.records if r.rtype == rtype and r.section == section]

    def owners(self, rtype: str, section: str = "ANSWER") -> list[str]:
        return [r.owner for r in self.records if r.rtype == rtype and r.section == section]


class _UpstreamProtocol(asyncio.DatagramProtocol):
    """Answers each datagram with FakeUpstream's table (which also records the question)."""

    def __init__(self, upstream: FakeUpstream) -> None:
        self.upstream = upstream
        self.transport: asyncio.DatagramTransport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.DatagramTransport, transport)

    def datagram_received(self, data: bytes, addr: tuple[str | int, ...]) -> None:
        if self.transport is not None:
            self.transport.sendto(self.upstream.reply_for(dnslib.DNSRecord.parse(data), "udp"), addr)


@dataclass
class DnsLab:
    daemon: Daemon
    upstream: FakeUpstream

    def pod_ip(self, namespace: str, pod: str) -> str:
        return self.daemon.lab.pod_ip(namespace, pod)

    def service_ip(self, namespace: str, name: str) -> str:
        service = next(s for s in self.daemon.store.cluster.services if s.meta.key == f"{namespace}/{name}")
        return service.cluster_ips[0]

    async def run(self, *argv: str) -> subprocess.CompletedProcess[str]:
        """`argv` in the client pod (via `ip netns exec`, which binds the pod's resolv.conf and hosts)."""
        return await asyncio.to_thread(self.daemon.lab.exec, CLIENT, argv, timeout=CLIENT_TIMEOUT_SECONDS)

    async def getent_hosts(self, key: str) -> dict[str, list[str]]:
        """What glibc's resolver gives `getent hosts key`: address -> [canonical name, aliases...]."""
        done = await self.run("getent", "hosts", key)
        assert done.returncode == 0, f"getent hosts {key}: exit {done.returncode} {done.stderr.strip()}"
        return {words[0]: words[1:] for words in (line.split() for line in done.stdout.splitlines()) if words}

    async def dig(self, *query: str) -> DigReply:
        """dig's reply to `query` (name and type, `-x IP`, `+tcp`...) sent to the pod's nameserver."""
        argv = ("dig", "+time=2", "+tries=2", "+noall", "+comments", "+answer", "+authority", "+additional")
        done = await self.run(*argv, *query)
        status = re.search(r"status: ([A-Z]+)", done.stdout)
        assert status is not None, (
            f"dig {' '.join(query)}: no reply: {done.stdout.strip()} {done.stderr.strip()}"
        )
        records: list[DigRecord] = []
        section = ""
        for line in done.stdout.splitlines():
            header = re.match(r";; ([A-Z]+) SECTION:", line)
            if header:
                section = header.group(1)
            elif line.strip() and not line.startswith(";"):
                owner, _ttl, _class, rtype, data = line.split(None, 4)
                records.append(DigRecord(section, owner, rtype, data.strip()))
        return DigReply(status.group(1), tuple(records))

    async def curl_pods(self, url: str, requests: int = CURL_REQUESTS) -> set[str]:
        """Which pods' echo servers answered `requests` GETs of `url` made by one curl, a connection each."""
        done = await self.run("curl", "-sS", "--max-time", "5", "-H", "Connection: close", *[url] * requests)
        assert done.returncode == 0, f"curl {url}: exit {done.returncode} {done.stderr.strip()}"
        replies: list[dict[str, Any]] = [json.loads(line) for line in done.stdout.splitlines() if line]
        assert len(replies) == requests
        return {reply["pod"] for reply in replies}


async def _serve_upstream(netns: str, upstream: FakeUpstream) -> asyncio.DatagramTransport:
    sock = open_socket_in_netns(netns, socket.AF_INET, socket.SOCK_DGRAM, UPSTREAM_ADDRESS)
    transport, _ = await asyncio.get_running_loop().create_datagram_endpoint(
        lambda: _UpstreamProtocol(upstream), sock=sock
    )
    return transport


async def _settle(daemon: Daemon) -> None:
    """Until every pod but the pinned ones is Ready and rules and zone reflect it (bounded)."""
    deadline = time.monotonic() + SETTLE_SECONDS
    while {p.meta.key for p in daemon.store.cluster.pods if not p.ready} != NOT_READY_PODS:
        if time.monotonic() > deadline:
            raise AssertionError(f"pods not ready within {SETTLE_SECONDS}s")
        await asyncio.sleep(0.1)
    await daemon.wait_programmed(daemon.store.version, max(0.1, deadline - time.monotonic()))


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def dns_lab() -> AsyncIterator[DnsLab]:
    skip_unless_root()
    daemon = Daemon(DaemonOptions(paths=(MANIFESTS,), lab=unique_lab_name(), health_timeout=1.0))
    await daemon.start()
    transport: asyncio.DatagramTransport | None = None
    try:
        upstream = FakeUpstream(answers=UPSTREAM_ANSWERS)
        transport = await _serve_upstream(daemon.lab.pod_netns(DNS_NAMESPACE, DNS_POD_NAME), upstream)
        await _settle(daemon)
        yield DnsLab(daemon, upstream)
    finally:
        if transport is not None:
            transport.close()
        await daemon.stop()


async def test_getent_resolves_short_and_namespace_qualified_service_names_through_the_search_path(
    dns_lab: DnsLab,
) -> None:
    web_ip = dns_lab.service_ip("shop", "web")
    assert await dns_lab.getent_hosts("web") == {web_ip: ["web.shop.svc.cluster.local"]}
    assert await dns_lab.getent_hosts("web.shop") == {web_ip: ["web.shop.svc.cluster.local"]}


async def test_curl_by_short_service_name_is_answered_by_every_web_pod(dns_lab: DnsLab) -> None:
    assert await dns_lab.curl_pods("http://web/") == {"web-1", "web-2"}


async def test_tcp_query_through_the_kube_dns_service_gets_the_service_address(dns_lab: DnsLab) -> None:
    reply = await dns_lab.dig("+tcp", "web.shop.svc.cluster.local", "A")
    assert reply.status == "NOERROR"
    assert reply.data("A") == [dns_lab.service_ip("shop", "web")]


async def test_headless_service_resolves_to_every_ready_pod_and_not_the_not_ready_one(
    dns_lab: DnsLab,
) -> None:
    addresses = await dns_lab.getent_hosts("db")
    assert set(addresses) == {dns_lab.pod_ip("shop", "db-0"), dns_lab.pod_ip("shop", "db-1")}
    assert dns_lab.pod_ip("shop", "db-2") not in addresses


async def test_headless_service_publishing_not_ready_addresses_resolves_to_the_not_ready_pod_too(
    dns_lab: DnsLab,
) -> None:
    addresses = await dns_lab.getent_hosts("peers")
    assert set(addresses) == {dns_lab.pod_ip("shop", "peer-0"), dns_lab.pod_ip("shop", "peer-1")}


async def test_srv_of_a_named_port_on_a_cluster_ip_service_targets_the_service_name(dns_lab: DnsLab) -> None:
    reply = await dns_lab.dig("_http._tcp.web.shop.svc.cluster.local", "SRV")
    assert reply.status == "NOERROR"
    assert [srv.split()[2:] for srv in reply.data("SRV")] == [["80", "web.shop.svc.cluster.local."]]


async def test_srv_of_a_headless_service_has_one_record_per_ready_endpoint_named_by_its_hostname(
    dns_lab: DnsLab,
) -> None:
    reply = await dns_lab.dig("_postgres._tcp.db.shop.svc.cluster.local", "SRV")
    assert reply.status == "NOERROR"
    targets = sorted(tuple(srv.split()[2:]) for srv in reply.data("SRV"))
    assert targets == [
        ("5432", "db-0.db.shop.svc.cluster.local."),
        ("5432", "db-1.db.shop.svc.cluster.local."),
    ]
    glue = {r.owner: r.data for r in reply.records if r.section == "ADDITIONAL" and r.rtype == "A"}
    assert glue == {
        "db-0.db.shop.svc.cluster.local.": dns_lab.pod_ip("shop", "db-0"),
        "db-1.db.shop.svc.cluster.local.": dns_lab.pod_ip("shop", "db-1"),
    }


async def test_ptr_of_a_headless_endpoint_pod_ip_names_the_pod_by_its_hostname(dns_lab: DnsLab) -> None:
    reply = await dns_lab.dig("-x", dns_lab.pod_ip("shop", "db-0"))
    assert reply.status == "NOERROR"
    assert reply.data("PTR") == ["db-0.db.shop.svc.cluster.local."]


async def test_ptr_of_a_service_ip_names_the_service(dns_lab: DnsLab) -> None:
    reply = await dns_lab.dig("-x", dns_lab.service_ip("shop", "web"))
    assert reply.status == "NOERROR"
    assert reply.data("PTR") == ["web.shop.svc.cluster.local."]


async def test_external_name_service_answers_with_a_cname_to_the_external_name(dns_lab: DnsLab) -> None:
    reply = await dns_lab.dig("payments.shop.svc.cluster.local", "CNAME")
    assert reply.status == "NOERROR"
    assert reply.data("CNAME") == ["api.payments.example."]


async def test_external_name_aliasing_an_in_cluster_service_reaches_its_pods(dns_lab: DnsLab) -> None:
    web_ip = dns_lab.service_ip("shop", "web")
    assert await dns_lab.getent_hosts("www") == {
        web_ip: ["web.shop.svc.cluster.local", "www.shop.svc.cluster.local"]
    }
    assert await dns_lab.curl_pods("http://www/") == {"web-1", "web-2"}


async def test_external_name_target_is_resolved_by_the_upstream_reachable_from_the_dns_pod(
    dns_lab: DnsLab,
) -> None:
    asked_before = len(dns_lab.upstream.received)
    assert await dns_lab.getent_hosts("payments") == {
        "203.0.113.80": ["api.payments.example", "payments.shop.svc.cluster.local"]
    }
    asked = dns_lab.upstream.received[asked_before:]
    assert ReceivedQuestion("udp", "api.payments.example.", dnslib.QTYPE.A) in asked


async def test_names_outside_the_cluster_domain_are_forwarded_from_the_dns_pods_namespace(
    dns_lab: DnsLab,
) -> None:
    asked_before = len(dns_lab.upstream.received)
    assert await dns_lab.getent_hosts("ledger.example") == {"203.0.113.81": ["ledger.example"]}
    asked = dns_lab.upstream.received[asked_before:]
    assert ReceivedQuestion("udp", "ledger.example.", dnslib.QTYPE.A) in asked


async def test_missing_name_in_the_pods_namespace_is_nxdomain_with_the_zone_soa(dns_lab: DnsLab) -> None:
    reply = await dns_lab.dig("nosuch.shop.svc.cluster.local", "A")
    assert reply.status == "NXDOMAIN"
    assert reply.data("A") == []
    assert reply.owners("SOA", "AUTHORITY") == ["cluster.local."]
