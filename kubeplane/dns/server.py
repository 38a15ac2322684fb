"""The cluster DNS server: asyncio UDP and TCP on one address, a packed-answer fast path, forwarding.

UDP queries for cluster names are answered in the socket's readiness callback, which reads the socket dry:
a query seen before (same bytes but the id) gets its stored response with the id patched in; otherwise the
question is parsed by hand, the lowercased question looked up in the current AnswerTable, and id, flags and
the question's spelling are patched into the template. Everything else (misses, malformed packets,
forwarding, CNAME chasing) runs as its own task, so a slow upstream never holds up other queries.
`update(cluster)` builds a new zone and table and swaps them in one assignment. Errors in handling one packet
are logged and answered with FORMERR or dropped; they never stop the server.
"""

from __future__ import annotations

import asyncio
import logging
import socket
import struct
import time
from bisect import bisect_left
from collections.abc import Sequence
from dataclasses import dataclass

import dnslib
from prometheus_client import CollectorRegistry

from kubeplane.dns.answers import AnswerTable
from kubeplane.dns.forward import Forwarder, Upstream, parse_upstream
from kubeplane.dns.lookup import FORMERR, NOTIMP, REFUSED, SERVFAIL, Answer, lookup
from kubeplane.dns.metrics import DURATION_BUCKETS, DnsMetrics, FastCounts
from kubeplane.dns.wire import (
    PLAIN_UDP_LIMIT,
    TCP_LIMIT,
    error_response,
    pack_reply,
    parse_question,
    question_bounds,
    truncated_response,
)
from kubeplane.dns.zone import Zone, build_zone
from kubeplane.model.objects import Cluster

log = logging.getLogger(__name__)

UDP_BATCH = 64  # datagrams read per readiness event before yielding to other callbacks
UDP_RECEIVE_SIZE = 4096
MAX_IN_FLIGHT = 1024  # slow-path tasks; beyond this, queries are dropped as an overloaded resolver does
TCP_IDLE_TIMEOUT = 10.0
BADVERS = 16


class ServerStateError(RuntimeError):
    """start() on a running server, or an address asked for before start()."""


@dataclass(frozen=True)
class _Reply:
    wire: bytes | None
    rcode: int
    zone: str
    plugin: str


class DnsServer:
    """Serves one cluster's DNS; `upstreams` (None: the cluster's configured resolvers) get other names."""

    def __init__(
        self,
        cluster: Cluster,
        *,
        upstreams: Sequence[str] | None = None,
        registry: CollectorRegistry | None = None,
        forward_timeout: float = 2.0,
    ) -> None:
        self._explicit_upstreams = None if upstreams is None else tuple(parse_upstream(u) for u in upstreams)
        self._forward_timeout = forward_timeout
        self._forwarder: Forwarder | None = None
        self.metrics = DnsMetrics(registry)
        self._tasks: set[asyncio.Task[None]] = set()
        self._udp: _UdpResponder | None = None
        self._tcp: asyncio.Server | None = None
        self.address: tuple[str, int] | None = None
        self.update(cluster)

    @property
    def zone(self) -> Zone:
        return self.table.zone

    def update(self, cluster: Cluster) -> None:
        """Rebuild the zone and its answer table from `cluster` and swap them in (exact invalidation).

        Safe to run in a worker thread (`asyncio.to_thread`): everything is built aside and published by
        plain attribute assignments, which the serving loop picks up at its next batch of packets.
        """
        upstreams = self._explicit_upstreams
        if upstreams is None:
            upstreams = tuple(parse_upstream(u) for u in cluster.kubeplane_config.upstream_resolvers)
        self._set_upstreams(upstreams)
        self.cluster = cluster
        zone = build_zone(cluster, serial=int(time.time()) & 0xFFFFFFFF)
        self.table = AnswerTable(zone, chase_upstream=self._forwarder is not None)
        self.metrics.cluster_zone = zone.origin
        log.info("dns zone built names=%d upstreams=%d", len(zone.records), len(upstreams))

    def _set_upstreams(self, upstreams: tuple[Upstream, ...]) -> None:
        if self._forwarder is not None and self._forwarder.upstreams == upstreams:
            return
        self._forwarder = Forwarder(upstreams, timeout=self._forward_timeout) if upstreams else None

    async def start(
        self,
        host: str = "127.0.0.1",
        port: int = 0,
        *,
        udp_sock: socket.socket | None = None,
        tcp_sock: socket.socket | None = None,
    ) -> tuple[str, int]:
        """Serve on `host`:`port` (UDP and TCP; port 0 picks one free for both), or on sockets opened by the
        caller (e.g. inside a pod's network namespace; the TCP one bound, listening or not). Returns the
        address served."""
        if self._udp is not None:
            raise ServerStateError("DNS server already started")
        if udp_sock is None and tcp_sock is None:
            udp_sock, tcp_sock = _bound_socket_pair(host, port)
        elif udp_sock is None or tcp_sock is None:
            raise ServerStateError("pass both udp_sock and tcp_sock, or neither")
        self._udp = _UdpResponder(self, udp_sock)
        tcp_counts = self.metrics.fast_counts("tcp", _family_label(tcp_sock))
        self._tcp = await asyncio.start_server(
            lambda r, w: self._serve_tcp_connection(r, w, tcp_counts), sock=tcp_sock
        )
        bound = udp_sock.getsockname()
        self.address = (bound[0], bound[1])
        self.metrics.server = f"dns://{bound[0]}:{bound[1]}"
        log.info("dns server listening address=%s:%d", bound[0], bound[1])
        return self.address

    async def stop(self) -> None:
        if self._udp is not None:
            self._udp.close()
            self._udp = None
        if self._tcp is not None:
            self._tcp.close()
            await self._tcp.wait_closed()
            self._tcp = None
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)

    async def __aenter__(self) -> DnsServer:
        await self.start()
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.stop()

    async def respond(self, query: bytes, counts: FastCounts) -> bytes | None:
        """The reply to one query over TCP (None: none), through the table and then the slow path."""
        started = time.perf_counter()
        hit = self.table.answer(query, via_tcp=True)
        if hit is not None:
            counts.record(hit[1].stat_key, time.perf_counter() - started)
            return hit[0]
        return await self._respond_slow(query, True, counts.family, started)

    def spawn_slow(
        self, query: bytes, addr: tuple[str | int, ...], responder: _UdpResponder, started: float
    ) -> None:
        """Answer a UDP query the table missed in a task of its own, so nothing waits for it."""
        if len(self._tasks) >= MAX_IN_FLIGHT:
            log.debug("dns query dropped reason=overload client=%s", addr[0])
            return
        task = asyncio.get_running_loop().create_task(self._udp_slow(query, addr, responder, started))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _udp_slow(
        self, query: bytes, addr: tuple[str | int, ...], responder: _UdpResponder, started: float
    ) -> None:
        wire = await self._respond_slow(query, False, responder.family, started)
        if wire is not None:
            responder.send(wire, addr)

    async def _respond_slow(self, query: bytes, via_tcp: bool, family: str, started: float) -> bytes | None:
        try:
            reply = await self._answer(query, via_tcp)
        except Exception:
            log.exception("dns query failed size=%d", len(query))
            reply = _Reply(error_response(query, SERVFAIL), SERVFAIL, ".", "")
        if reply.wire is not None:
            self.metrics.observe(
                reply.zone,
                "tcp" if via_tcp else "udp",
                family,
                _qtype_of(query),
                reply.rcode,
                reply.plugin,
                time.perf_counter() - started,
            )
        return reply.wire

    async def _answer(self, query: bytes, via_tcp: bool) -> _Reply:
        table = self.table
        origin = table.zone.origin
        question = parse_question(query)
        if question is not None:
            computed = table.compute(question)
            if computed is not None and computed.template is not None:
                self.metrics.cache_miss()
                wire = computed.template.render(query, question.end)
                if not via_tcp and len(wire) > question.payload:
                    wire = truncated_response(query, question.end, question.edns)
                return _Reply(wire, computed.template.rcode, origin, "kubernetes")
        try:
            parsed = dnslib.DNSRecord.parse(query)
        except Exception:  # dnslib raises many unrelated types on garbage; all mean "malformed"
            return _Reply(error_response(query, FORMERR), FORMERR, ".", "")
        if parsed.header.qr:
            return _Reply(None, 0, ".", "")
        if parsed.header.opcode != 0:
            return _Reply(error_response(query, NOTIMP), NOTIMP, ".", "")
        options = [rr for rr in parsed.ar if rr.rtype == dnslib.QTYPE.OPT]
        if len(parsed.questions) != 1 or len(options) > 1:
            return _Reply(error_response(query, FORMERR), FORMERR, ".", "")
        limit = TCP_LIMIT if via_tcp else PLAIN_UDP_LIMIT
        if options:
            if (options[0].ttl >> 16) & 0xFF:
                return _Reply(_badvers(parsed), BADVERS, ".", "")
            limit = TCP_LIMIT if via_tcp else max(PLAIN_UDP_LIMIT, options[0].rclass)
        parsed.ar = []
        answer = lookup(table.zone, str(parsed.q.qname), parsed.q.qtype) if parsed.q.qclass == 1 else None
        if answer is not None:
            self.metrics.cache_miss()
            reply = await self._finish_in_zone(parsed, answer)
            return _Reply(_fit(reply, bool(options), limit), reply.header.rcode, origin, "kubernetes")
        if self._forwarder is None:
            refused = parsed.reply(ra=1, aa=0)
            refused.header.rcode = REFUSED
            return _Reply(_fit(refused, bool(options), limit), REFUSED, ".", "")
        result = await self._forwarder.resolve(parsed)
        if result is None:
            failed = parsed.reply(ra=1, aa=0)
            failed.header.rcode = SERVFAIL
            return _Reply(_fit(failed, bool(options), limit), SERVFAIL, ".", "forward")
        if result.from_cache:
            self.metrics.cache_hit(result.response.header.rcode, not result.response.rr)
        else:
            self.metrics.cache_miss()
        return _Reply(
            _fit(result.response, bool(options), limit), result.response.header.rcode, ".", "forward"
        )

    async def _finish_in_zone(self, parsed: dnslib.DNSRecord, answer: Answer) -> dnslib.DNSRecord:
        """Pack an in-zone answer, first resolving an external CNAME target upstream when one is set up."""
        if answer.chase is None or self._forwarder is None:
            return pack_reply(parsed, answer)
        target = dnslib.DNSRecord(
            dnslib.DNSHeader(id=parsed.header.id), q=dnslib.DNSQuestion(answer.chase, parsed.q.qtype)
        )
        result = await self._forwarder.resolve(target)
        extra = list(result.response.rr) if result is not None else []
        return pack_reply(parsed, answer, extra)

    async def _serve_tcp_connection(
        self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, counts: FastCounts
    ) -> None:
        """Answer length-prefixed queries in order until the client closes or idles (RFC 7766)."""
        task = asyncio.current_task()
        if task is not None:  # tracked so stop() ends open connections too
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)
        try:
            while True:
                prefix = await asyncio.wait_for(reader.readexactly(2), TCP_IDLE_TIMEOUT)
                query = await asyncio.wait_for(
                    reader.readexactly(struct.unpack("!H", prefix)[0]), TCP_IDLE_TIMEOUT
                )
                wire = await self.respond(query, counts)
                if wire is not None:
                    writer.write(struct.pack("!H", len(wire)) + wire)
                    await writer.drain()
        except (asyncio.IncompleteReadError, TimeoutError, ConnectionError):
            pass
        except Exception:
            log.exception("dns tcp connection failed")
        finally:
            writer.close()


class _UdpResponder:
    """Reads the UDP socket dry on each readiness event: table hits are answered right there, everything
    else is handed to a task. Reading in a batch rather than one datagram per callback spares the event
    loop's per-packet overhead, which otherwise costs more than answering."""

    def __init__(self, server: DnsServer, sock: socket.socket) -> None:
        self.server = server
        self.sock = sock
        self.family = _family_label(sock)
        self.counts = server.metrics.fast_counts("udp", self.family)
        sock.setblocking(False)
        self._loop = asyncio.get_running_loop()
        self._loop.add_reader(sock.fileno(), self.on_readable)

    def on_readable(self) -> None:
        server = self.server
        table = server.table
        seen, answer = table.seen_udp, table.answer
        recvfrom, sendto = self.sock.recvfrom, self.sock.sendto
        answers, durations = self.counts.answers, self.counts.durations
        clock = time.perf_counter
        for _ in range(UDP_BATCH):
            try:
                query, addr = recvfrom(UDP_RECEIVE_SIZE)
            except (BlockingIOError, InterruptedError):
                return
            except OSError as error:  # e.g. ICMP port unreachable reported for an earlier reply
                log.debug("dns udp receive failed error=%s", error)
                continue
            started = clock()
            try:
                repeat = seen.get(query[2:])
                if repeat is not None:
                    sendto(query[:2] + repeat[0], addr)
                    template = repeat[1]
                else:
                    hit = answer(query, False)
                    if hit is None:
                        server.spawn_slow(query, addr, self, started)
                        continue
                    sendto(hit[0], addr)
                    template = hit[1]
                # FastCounts.record written out: this loop is the whole cost of a cluster query.
                stat_key = template.stat_key
                answers[stat_key] = answers.get(stat_key, 0) + 1
                buckets = durations.get(stat_key >> 8) or self.counts.buckets_for(stat_key >> 8)
                elapsed = clock() - started
                buckets[bisect_left(DURATION_BUCKETS, elapsed)] += 1
                buckets[-1] += elapsed
            except OSError as error:
                log.debug("dns udp send failed client=%s error=%s", addr[0], error)
            except Exception:
                log.exception("dns udp packet failed size=%d", len(query))

    def send(self, wire: bytes, addr: tuple[str | int, ...]) -> None:
        try:
            self.sock.sendto(wire, addr)
        except OSError as error:
            log.debug("dns udp send failed client=%s error=%s", addr[0], error)

    def close(self) -> None:
        self._loop.remove_reader(self.sock.fileno())
        self.sock.close()


def _qtype_of(query: bytes) -> int:
    """The question type of a plain query, or 0 (counted as "other") when there is no plain question."""
    bounds = question_bounds(query)
    return (query[bounds[0] + 1] << 8) | query[bounds[0] + 2] if bounds is not None else 0


def _family_label(sock: socket.socket) -> str:
    """CoreDNS's `family` label: 1 for IPv4, 2 for IPv6."""
    return "2" if sock.family == socket.AF_INET6 else "1"


def _fit(reply: dnslib.DNSRecord, edns: bool, limit: int) -> bytes:
    """Pack `reply` (adding our OPT when the query had one); if over `limit`, an empty reply with TC."""
    if edns:
        reply.add_ar(dnslib.EDNS0(udp_len=1232))
    wire = bytes(reply.pack())
    if len(wire) <= limit:
        return wire
    truncated = dnslib.DNSRecord(reply.header, questions=reply.questions)
    truncated.header.tc = 1
    if edns:
        truncated.add_ar(dnslib.EDNS0(udp_len=1232))
    return bytes(truncated.pack())


def _badvers(parsed: dnslib.DNSRecord) -> bytes:
    """RFC 6891: an unknown EDNS version gets BADVERS (extended rcode 1 in the OPT, header rcode 0)."""
    reply = parsed.reply(ra=1, aa=0)
    reply.ar = []
    reply.add_ar(dnslib.EDNS0(udp_len=1232, ext_rcode=BADVERS >> 4))
    return bytes(reply.pack())


def _bound_socket_pair(host: str, port: int, attempts: int = 8) -> tuple[socket.socket, socket.socket]:
    """UDP and TCP sockets bound to the same port; with port 0, retry until a port is free for both."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    for attempt in range(attempts):
        udp = socket.socket(family, socket.SOCK_DGRAM)
        tcp = socket.socket(family, socket.SOCK_STREAM)
        try:
            udp.bind((host, port))
            tcp.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            tcp.bind((host, udp.getsockname()[1]))
            return udp, tcp
        except OSError:
            udp.close()
            tcp.close()
            if port != 0 or attempt == attempts - 1:
                raise
    raise OSError(f"no free port for UDP and TCP on {host}")
