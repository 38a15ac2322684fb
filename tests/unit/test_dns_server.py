"""DnsServer over loopback sockets with dnspython as the client: UDP, TCP, truncation, errors, updates."""

from __future__ import annotations

import asyncio
import logging
import socket
import struct
import threading

import dns.asyncquery
import dns.flags
import dns.message
import dns.query
import dns.rcode
import pytest
from dns_fixtures import shop_cluster
from prometheus_client import CollectorRegistry, generate_latest

from kubeplane.dns.fake_upstream import FakeUpstream
from kubeplane.dns.server import DnsServer
from kubeplane.model.objects import Cluster, ObjectMeta, Service, ServicePort

TIMEOUT = 3.0
CLUSTER = shop_cluster(db_endpoints=60)


async def udp(server: DnsServer, name: str, rdtype: str = "A", **make: object) -> dns.message.Message:
    assert server.address is not None
    query = dns.message.make_query(name, rdtype, **make)  # type: ignore[arg-type]
    return await dns.asyncquery.udp(query, server.address[0], port=server.address[1], timeout=TIMEOUT)


async def tcp(server: DnsServer, name: str, rdtype: str = "A") -> dns.message.Message:
    return await tcp_message(server, dns.message.make_query(name, rdtype))


async def tcp_message(server: DnsServer, query: dns.message.Message) -> dns.message.Message:
    assert server.address is not None
    return await dns.asyncquery.tcp(query, server.address[0], port=server.address[1], timeout=TIMEOUT)


async def raw_udp(server: DnsServer, payload: bytes, wait: float) -> bytes | None:
    """Send raw bytes; the reply, or None if none came within `wait` seconds."""
    assert server.address is not None
    loop = asyncio.get_running_loop()
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.setblocking(False)
    try:
        await loop.sock_connect(sock, server.address)
        await loop.sock_sendall(sock, payload)
        try:
            return await asyncio.wait_for(loop.sock_recv(sock, 4096), wait)
        except TimeoutError:
            return None
    finally:
        sock.close()


async def test_udp_and_tcp_answer_cluster_names_echoing_case() -> None:
    async with DnsServer(CLUSTER) as server:
        over_udp = await udp(server, "Web.Shop.svc.cluster.local.")
        over_tcp = await tcp(server, "WEB.shop.svc.cluster.local.")
    assert [str(r) for r in over_udp.answer] == ["Web.Shop.svc.cluster.local. 5 IN A 10.96.0.20"]
    assert [str(r) for r in over_tcp.answer] == ["WEB.shop.svc.cluster.local. 5 IN A 10.96.0.20"]


async def test_many_endpoints_truncate_over_udp_and_arrive_whole_over_tcp() -> None:
    async with DnsServer(CLUSTER) as server:
        truncated = await udp(server, "db.shop.svc.cluster.local.", use_edns=False)
        whole = await tcp(server, "db.shop.svc.cluster.local.")
    assert truncated.flags & dns.flags.TC
    assert not whole.flags & dns.flags.TC
    assert sorted(rr.address for rr in whole.answer[0]) == sorted(f"10.244.1.{1 + i}" for i in range(60))


async def test_pipelined_tcp_queries_are_answered_in_order_on_one_connection() -> None:
    names = ["web.shop.svc.cluster.local.", "nope.shop.svc.cluster.local.", "db.shop.svc.cluster.local."]
    async with DnsServer(CLUSTER) as server:
        assert server.address is not None
        reader, writer = await asyncio.open_connection(*server.address)
        wires = [dns.message.make_query(name, "A", id=index).to_wire() for index, name in enumerate(names)]
        writer.write(b"".join(struct.pack("!H", len(wire)) + wire for wire in wires))
        await writer.drain()
        replies = []
        for _ in names:
            (length,) = struct.unpack("!H", await asyncio.wait_for(reader.readexactly(2), TIMEOUT))
            replies.append(dns.message.from_wire(await reader.readexactly(length)))
        writer.close()
    assert [(r.id, str(r.question[0].name)) for r in replies] == list(enumerate(names))
    assert [r.rcode() for r in replies] == [dns.rcode.NOERROR, dns.rcode.NXDOMAIN, dns.rcode.NOERROR]


async def test_nxdomain_and_nodata_carry_the_soa() -> None:
    async with DnsServer(CLUSTER) as server:
        missing = await udp(server, "nope.shop.svc.cluster.local.")
        nodata = await udp(server, "web.shop.svc.cluster.local.", "AAAA")
    assert missing.rcode() == dns.rcode.NXDOMAIN
    assert nodata.rcode() == dns.rcode.NOERROR and nodata.answer == []
    for reply in (missing, nodata):
        assert [str(rrset.name) for rrset in reply.authority] == ["cluster.local."]


async def test_garbage_gets_formerr_and_the_server_keeps_answering() -> None:
    async with DnsServer(CLUSTER) as server:
        header_then_junk = struct.pack("!HHHHHH", 0x1234, 0x0100, 1, 0, 0, 0) + b"\xff\xfe\xfd"
        formerr = await raw_udp(server, header_then_junk, wait=TIMEOUT)
        too_short = await raw_udp(server, b"\x01\x02\x03", wait=0.3)
        after = await udp(server, "web.shop.svc.cluster.local.")
    assert formerr is not None
    assert formerr[:2] == b"\x12\x34" and formerr[3] & 0x0F == dns.rcode.FORMERR
    assert too_short is None
    assert after.rcode() == dns.rcode.NOERROR


async def test_unknown_opcode_is_notimp_and_unknown_edns_version_badvers() -> None:
    async with DnsServer(CLUSTER) as server:
        notify = dns.message.make_query("web.shop.svc.cluster.local.", "SOA")
        notify.set_opcode(dns.opcode.NOTIFY)
        assert server.address is not None
        notimp = await dns.asyncquery.udp(notify, server.address[0], port=server.address[1], timeout=TIMEOUT)
        badvers = await udp(server, "web.shop.svc.cluster.local.", use_edns=1)
    assert notimp.rcode() == dns.rcode.NOTIMP
    assert badvers.rcode() == dns.rcode.BADVERS


async def test_do_bit_is_echoed_on_fast_slow_and_error_paths() -> None:
    """RFC 3225: the responder copies DO into its OPT, whichever path answers."""
    async with DnsServer(CLUSTER) as server:
        fast = await udp(server, "web.shop.svc.cluster.local.", want_dnssec=True)
        first_negative = await udp(server, "nope.shop.svc.cluster.local.", want_dnssec=True)  # slow path
        over_tcp = await tcp_message(
            server, dns.message.make_query("db.shop.svc.cluster.local.", "A", want_dnssec=True)
        )
        refused = await udp(server, "www.example.com.", want_dnssec=True)
        badvers = await udp(server, "web.shop.svc.cluster.local.", use_edns=1, ednsflags=dns.flags.DO)
        plain_edns = await udp(server, "nope2.shop.svc.cluster.local.", use_edns=0)
    assert fast.answer and first_negative.rcode() == dns.rcode.NXDOMAIN and over_tcp.answer
    for reply in (fast, first_negative, over_tcp, refused, badvers):
        assert reply.ednsflags & dns.flags.DO, reply
    assert plain_edns.edns == 0 and not plain_edns.ednsflags & dns.flags.DO


async def test_ad_bit_of_the_query_is_never_copied_into_a_reply() -> None:
    """dig sets AD; a server that validates nothing must answer with AD clear (RFC 6840 5.8)."""
    async with DnsServer(CLUSTER) as server:
        replies = [
            await udp(server, "web.shop.svc.cluster.local.", flags=dns.flags.RD | dns.flags.AD),
            await udp(server, "nope.shop.svc.cluster.local.", flags=dns.flags.RD | dns.flags.AD),
            await udp(server, "_http._tcp.web.shop.svc.cluster.local.", "SRV", flags=dns.flags.AD),
            await udp(server, "www.example.com.", flags=dns.flags.RD | dns.flags.AD),
        ]
    assert [r.rcode() for r in replies] == [
        dns.rcode.NOERROR,
        dns.rcode.NXDOMAIN,
        dns.rcode.NOERROR,
        dns.rcode.REFUSED,
    ]
    for reply in replies:
        assert not reply.flags & dns.flags.AD, reply


async def test_names_outside_the_domain_are_refused_without_upstream() -> None:
    async with DnsServer(CLUSTER) as server:
        reply = await udp(server, "www.example.com.")
    assert reply.rcode() == dns.rcode.REFUSED


async def test_update_swaps_answers_including_remembered_negative_ones() -> None:
    async with DnsServer(CLUSTER) as server:
        await udp(server, "api.shop.svc.cluster.local.")
        await udp(server, "web.shop.svc.cluster.local.")
        before = await udp(server, "api.shop.svc.cluster.local.")  # now a repeat, kept by exact bytes
        assert server.table.seen_udp
        api = Service(ObjectMeta("api", "shop"), cluster_ips=("10.96.0.44",), ports=(ServicePort(80),))
        server.update(Cluster(services=(api,)))
        after = await udp(server, "api.shop.svc.cluster.local.")
        gone = await udp(server, "web.shop.svc.cluster.local.")
    assert before.rcode() == dns.rcode.NXDOMAIN
    assert [rr.address for rr in after.answer[0]] == ["10.96.0.44"]
    assert gone.rcode() == dns.rcode.NXDOMAIN


async def test_forwarded_answers_come_from_upstream_once_then_from_cache() -> None:
    async with (
        FakeUpstream({"www.example.com.": ("192.0.2.7",)}) as upstream,
        DnsServer(CLUSTER, upstreams=[upstream.address]) as server,
    ):
        first = await udp(server, "WWW.example.com.")
        second = await udp(server, "www.example.com.")
        missing = await udp(server, "nothing.example.com.")
        missing_again = await udp(server, "nothing.example.com.")
    assert [str(r) for r in first.answer] == ["WWW.example.com. 30 IN A 192.0.2.7"]
    assert [rr.address for rr in second.answer[0]] == ["192.0.2.7"]
    assert missing.rcode() == missing_again.rcode() == dns.rcode.NXDOMAIN
    assert [q.qname for q in upstream.received] == ["www.example.com.", "nothing.example.com."]


async def test_truncated_upstream_answer_is_retried_over_tcp() -> None:
    async with (
        FakeUpstream({"www.example.com.": ("192.0.2.7",)}, truncate_udp=True) as upstream,
        DnsServer(CLUSTER, upstreams=[upstream.address]) as server,
    ):
        reply = await udp(server, "www.example.com.")
    assert [rr.address for rr in reply.answer[0]] == ["192.0.2.7"]
    assert [q.proto for q in upstream.received] == ["udp", "tcp"]


async def test_silent_upstream_gives_servfail_and_one_log_line(caplog: pytest.LogCaptureFixture) -> None:
    async with (
        FakeUpstream({}, silent=True) as upstream,
        DnsServer(CLUSTER, upstreams=[upstream.address], forward_timeout=0.2) as server,
    ):
        with caplog.at_level(logging.WARNING, logger="kubeplane.dns.forward"):
            reply = await udp(server, "www.example.com.")
    assert reply.rcode() == dns.rcode.SERVFAIL
    failures = [r.getMessage() for r in caplog.records if "dns forward failed" in r.getMessage()]
    assert len(failures) == 1
    assert "qname=www.example.com." in failures[0] and "timeout" in failures[0]


async def test_second_upstream_answers_when_first_is_silent() -> None:
    async with (
        FakeUpstream({}, silent=True) as dead,
        FakeUpstream({"a.example.": ("192.0.2.1",)}) as alive,
        DnsServer(CLUSTER, upstreams=[dead.address, alive.address], forward_timeout=0.2) as server,
    ):
        reply = await udp(server, "a.example.")
    assert [rr.address for rr in reply.answer[0]] == ["192.0.2.1"]


async def test_slow_upstream_does_not_hold_up_cluster_queries() -> None:
    async with (
        FakeUpstream({"slow.example.": ("192.0.2.9",)}, delay=1.0) as upstream,
        DnsServer(CLUSTER, upstreams=[upstream.address]) as server,
    ):
        forwarded = asyncio.create_task(udp(server, "slow.example."))
        await asyncio.sleep(0.05)
        cluster_reply = await udp(server, "web.shop.svc.cluster.local.")
        forward_pending_when_cluster_answered = not forwarded.done()
        slow_reply = await forwarded
    assert cluster_reply.rcode() == dns.rcode.NOERROR
    assert forward_pending_when_cluster_answered
    assert [rr.address for rr in slow_reply.answer[0]] == ["192.0.2.9"]


async def test_externalname_target_is_resolved_upstream() -> None:
    async with (
        FakeUpstream({"www.example.com.": ("192.0.2.7",)}) as upstream,
        DnsServer(CLUSTER, upstreams=[upstream.address]) as server,
    ):
        reply = await udp(server, "ext.shop.svc.cluster.local.")
    assert [str(r) for r in reply.answer] == [
        "ext.shop.svc.cluster.local. 5 IN CNAME www.example.com.",
        "www.example.com. 30 IN A 192.0.2.7",
    ]


async def test_serves_on_sockets_opened_by_the_caller() -> None:
    udp_sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    udp_sock.bind(("127.0.0.1", 0))
    tcp_sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    tcp_sock.bind(("127.0.0.1", udp_sock.getsockname()[1]))
    server = DnsServer(CLUSTER)
    await server.start(udp_sock=udp_sock, tcp_sock=tcp_sock)
    try:
        assert server.address == udp_sock.getsockname()
        over_udp = await udp(server, "web.shop.svc.cluster.local.")
        over_tcp = await tcp(server, "web.shop.svc.cluster.local.")
    finally:
        await server.stop()
    assert over_udp.answer == over_tcp.answer


async def test_metrics_use_coredns_names() -> None:
    registry = CollectorRegistry()
    async with DnsServer(CLUSTER, registry=registry) as server:
        await udp(server, "web.shop.svc.cluster.local.")
        await udp(server, "web.shop.svc.cluster.local.")
        await udp(server, "nope.shop.svc.cluster.local.")
        await tcp(server, "web.shop.svc.cluster.local.")
        await udp(server, "www.example.com.")
    assert server.address is not None
    base = {"server": f"dns://127.0.0.1:{server.address[1]}", "view": ""}
    zone = {**base, "zone": "cluster.local."}
    expected = [
        ("coredns_dns_requests_total", {**zone, "proto": "udp", "family": "1", "type": "A"}, 3),
        ("coredns_dns_requests_total", {**zone, "proto": "tcp", "family": "1", "type": "A"}, 1),
        ("coredns_dns_responses_total", {**zone, "rcode": "NOERROR", "plugin": "kubernetes"}, 3),
        ("coredns_dns_responses_total", {**zone, "rcode": "NXDOMAIN", "plugin": "kubernetes"}, 1),
        ("coredns_dns_responses_total", {**base, "zone": ".", "rcode": "REFUSED", "plugin": ""}, 1),
        ("coredns_dns_request_duration_seconds_count", {**zone, "type": "A"}, 4),
        ("coredns_cache_hits_total", {**base, "type": "success", "zones": "."}, 3),
        ("coredns_cache_misses_total", {**base, "zones": "."}, 1),
    ]
    for name, labels, value in expected:
        assert registry.get_sample_value(name, labels) == value, (name, labels)
    assert "coredns_dns_request_duration_seconds_bucket" in generate_latest(registry).decode()


async def test_cluster_names_are_answered_while_the_event_loop_is_blocked() -> None:
    """The UDP fast path runs on its own thread, and packs first-time questions (search-path expansions,
    pod names) there too: a CPU-bound loop (a proxy sync in the daemon) holds cluster answers up for a
    switch interval at most, not until the loop is free again."""
    answered = threading.Event()
    replies: list[dns.message.Message] = []
    names = (
        "web.shop.svc.cluster.local.",
        "web.shop.svc.cluster.local.cluster.local.",
        "10-1-2-3.shop.pod.cluster.local.",
    )

    def client(address: tuple[str, int]) -> None:
        for name in names:
            query = dns.message.make_query(name, "A")
            replies.append(dns.query.udp(query, address[0], port=address[1], timeout=TIMEOUT))
        answered.set()

    async with DnsServer(CLUSTER) as server:
        assert server.address is not None
        thread = threading.Thread(target=client, args=(server.address,))
        thread.start()
        answered_while_blocked = answered.wait(TIMEOUT)  # blocks the loop on purpose
        thread.join(TIMEOUT)
    assert answered_while_blocked
    web, search_expansion, pod = replies
    assert [rr.address for rr in web.answer[0]] == ["10.96.0.20"]
    assert search_expansion.rcode() == dns.rcode.NXDOMAIN
    assert [rr.address for rr in pod.answer[0]] == ["10.1.2.3"]


async def test_stop_ends_the_udp_thread_and_closes_the_socket() -> None:
    server = DnsServer(CLUSTER)
    address = await server.start()
    thread_name = f"dns-udp-{address[1]}"
    running = [t.name for t in threading.enumerate()]
    await server.stop()
    assert thread_name in running
    assert thread_name not in [t.name for t in threading.enumerate()]
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as rebind:
        rebind.bind(address)  # the port is free again
