"""Forwarding of names outside the cluster domain to upstream resolvers, with a small TTL-honouring cache.

Each forwarded question is its own coroutine on its own ephemeral socket (opened in the namespace the
server listens in: kubeplane.dns.upstream_sockets), so a slow upstream delays only the questions waiting
for it. Upstreams are tried in order: UDP first, TCP when the UDP answer is truncated; a
timeout, a socket error, an unparsable reply or SERVFAIL/REFUSED moves on to the next one. The cache keeps
positive answers for their smallest TTL and negative ones (NXDOMAIN, NODATA) for the SOA's negative TTL
(RFC 2308), both capped, and serves them with the TTLs counted down.
"""

from __future__ import annotations

import asyncio
import ipaddress
import logging
import random
import socket
import struct
import time
from collections import OrderedDict
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import dnslib

from kubeplane.dns.upstream_sockets import UpstreamSockets

log = logging.getLogger(__name__)

DEFAULT_TIMEOUT = 2.0
DEFAULT_CACHE_SIZE = 1024
MAX_POSITIVE_TTL = 3600
MAX_NEGATIVE_TTL = 1800
UPSTREAM_EDNS_PAYLOAD = 1232
RCODE_SERVFAIL, RCODE_NXDOMAIN, RCODE_REFUSED = 2, 3, 5


class UpstreamAddressError(ValueError):
    """An upstream resolver address that is not `ip`, `ip:port` or `[ipv6]:port`."""


class UpstreamError(Exception):
    """One upstream did not give a usable answer (timeout, socket error, garbage, wrong id)."""


@dataclass(frozen=True)
class Upstream:
    host: str
    port: int = 53

    def __str__(self) -> str:
        return f"[{self.host}]:{self.port}" if ":" in self.host else f"{self.host}:{self.port}"


def parse_upstream(text: str) -> Upstream:
    """`ip`, `ip:port`, `[ipv6]` or `[ipv6]:port` (a bare IPv6 address means port 53)."""
    host, port = text.strip(), "53"
    if host.startswith("["):
        host, _, rest = host[1:].partition("]")
        if rest:
            if not rest.startswith(":"):
                raise UpstreamAddressError(f"upstream {text!r}: expected [ipv6]:port")
            port = rest[1:]
    elif host.count(":") == 1:
        host, port = host.split(":")
    try:
        ipaddress.ip_address(host)
        port_number = int(port)
    except ValueError as error:
        raise UpstreamAddressError(f"upstream {text!r}: {error}") from error
    if not 0 < port_number < 65536:
        raise UpstreamAddressError(f"upstream {text!r}: port out of range")
    return Upstream(host, port_number)


@dataclass(frozen=True)
class ForwardResult:
    """An upstream's answer re-addressed to the client (its id and question), and whether it was cached."""

    response: dnslib.DNSRecord
    from_cache: bool


@dataclass(frozen=True)
class _CacheEntry:
    wire: bytes
    stored_at: float
    expires_at: float


class Forwarder:
    def __init__(
        self,
        upstreams: Sequence[Upstream],
        timeout: float = DEFAULT_TIMEOUT,
        cache_size: int = DEFAULT_CACHE_SIZE,
        clock: Callable[[], float] = time.monotonic,
        sockets: UpstreamSockets | None = None,
    ) -> None:
        """`sockets`: where upstream sockets come from (None: this process's namespace)."""
        self.upstreams = tuple(upstreams)
        self.timeout = timeout
        self.sockets = sockets if sockets is not None else UpstreamSockets()
        self._cache: OrderedDict[tuple[str, int, int], _CacheEntry] = OrderedDict()
        self._cache_size = cache_size
        self._clock = clock

    async def resolve(self, query: dnslib.DNSRecord) -> ForwardResult | None:
        """The answer to `query`'s question from the cache or the first upstream that answers; None if
        none does (the caller answers SERVFAIL)."""
        question = query.q
        key = (str(question.qname).lower(), question.qtype, question.qclass)
        cached = self._from_cache(key, query)
        if cached is not None:
            return ForwardResult(cached, from_cache=True)
        outgoing = dnslib.DNSRecord(dnslib.DNSHeader(id=random.randrange(1 << 16), rd=1), q=question)
        outgoing.add_ar(dnslib.EDNS0(udp_len=UPSTREAM_EDNS_PAYLOAD))
        failures: list[str] = []
        response: dnslib.DNSRecord | None = None
        for upstream in self.upstreams:
            try:
                response = await self._ask(upstream, outgoing)
            except UpstreamError as error:
                failures.append(f"{upstream}:{error}")
                continue
            if response.header.rcode in (RCODE_SERVFAIL, RCODE_REFUSED):
                failures.append(f"{upstream}:rcode={response.header.rcode}")
                continue
            self._store(key, response)
            break
        else:
            log.warning(
                "dns forward failed qname=%s qtype=%s upstreams=%s",
                question.qname,
                dnslib.QTYPE.get(question.qtype),
                ",".join(failures) or "none",
            )
            if response is None:
                return None
        return ForwardResult(_readdress(response, query), from_cache=False)

    async def _ask(self, upstream: Upstream, outgoing: dnslib.DNSRecord) -> dnslib.DNSRecord:
        wire = bytes(outgoing.pack())
        try:
            exchange = _exchange_udp(self.sockets, upstream, wire, outgoing.header.id)
            reply = await asyncio.wait_for(exchange, self.timeout)
            if reply[2] & 0x02:  # TC: the full answer only fits over TCP
                reply = await asyncio.wait_for(_exchange_tcp(self.sockets, upstream, wire), self.timeout)
            response = dnslib.DNSRecord.parse(reply)
        except TimeoutError as error:
            raise UpstreamError("timeout") from error
        except OSError as error:
            raise UpstreamError(error.strerror or type(error).__name__) from error
        except (dnslib.DNSError, IndexError, struct.error) as error:
            raise UpstreamError("malformed reply") from error
        if response.header.id != outgoing.header.id:
            raise UpstreamError("reply id mismatch")
        return response

    def _from_cache(self, key: tuple[str, int, int], query: dnslib.DNSRecord) -> dnslib.DNSRecord | None:
        entry = self._cache.get(key)
        if entry is None:
            return None
        now = self._clock()
        if now >= entry.expires_at:
            del self._cache[key]
            return None
        self._cache.move_to_end(key)
        response = dnslib.DNSRecord.parse(entry.wire)
        elapsed = int(now - entry.stored_at)
        for rr in (*response.rr, *response.auth, *response.ar):
            rr.ttl = max(0, rr.ttl - elapsed)
        return _readdress(response, query)

    def _store(self, key: tuple[str, int, int], response: dnslib.DNSRecord) -> None:
        ttl = _cache_ttl(response)
        if ttl <= 0:
            return
        now = self._clock()
        self._cache[key] = _CacheEntry(bytes(response.pack()), now, now + ttl)
        self._cache.move_to_end(key)
        while len(self._cache) > self._cache_size:
            self._cache.popitem(last=False)


def _cache_ttl(response: dnslib.DNSRecord) -> int:
    """How long a response may be cached: 0 for errors and for negative answers without an SOA."""
    rcode = response.header.rcode
    if rcode == 0 and response.rr:
        return min(MAX_POSITIVE_TTL, min(rr.ttl for rr in response.rr))
    if rcode in (0, RCODE_NXDOMAIN):
        soas = [rr for rr in response.auth if rr.rtype == dnslib.QTYPE.SOA]
        if soas:
            return min(MAX_NEGATIVE_TTL, min(min(rr.ttl, rr.rdata.times[-1]) for rr in soas))
    return 0


def _readdress(response: dnslib.DNSRecord, query: dnslib.DNSRecord) -> dnslib.DNSRecord:
    """`response` with the client's id and question (its case) and without the upstream's OPT record."""
    header = response.header
    header.id = query.header.id
    header.rd = query.header.rd
    header.aa = 0
    header.ra = 1
    readdressed = dnslib.DNSRecord(
        header, questions=[query.q], rr=list(response.rr), auth=list(response.auth)
    )
    for rr in response.ar:
        if rr.rtype != dnslib.QTYPE.OPT:
            readdressed.add_ar(rr)
    return readdressed


class _ReplyCatcher(asyncio.DatagramProtocol):
    def __init__(self, expected_id: int) -> None:
        self.expected_id = expected_id
        self.reply: asyncio.Future[bytes] = asyncio.get_running_loop().create_future()

    def datagram_received(self, data: bytes, addr: tuple[str | int, ...]) -> None:
        if (
            len(data) >= 12
            and struct.unpack_from("!H", data)[0] == self.expected_id
            and not self.reply.done()
        ):
            self.reply.set_result(data)

    def error_received(self, exc: Exception) -> None:
        if not self.reply.done():
            self.reply.set_exception(exc)


async def _exchange_udp(sockets: UpstreamSockets, upstream: Upstream, wire: bytes, query_id: int) -> bytes:
    loop = asyncio.get_running_loop()
    sock = await sockets.open(_family(upstream), socket.SOCK_DGRAM)
    try:
        sock.connect((upstream.host, upstream.port))
        transport, catcher = await loop.create_datagram_endpoint(lambda: _ReplyCatcher(query_id), sock=sock)
    except BaseException:
        sock.close()
        raise
    try:
        transport.sendto(wire)
        return await catcher.reply
    finally:
        transport.close()


async def _exchange_tcp(sockets: UpstreamSockets, upstream: Upstream, wire: bytes) -> bytes:
    sock = await sockets.open(_family(upstream), socket.SOCK_STREAM)
    try:
        await asyncio.get_running_loop().sock_connect(sock, (upstream.host, upstream.port))
        reader, writer = await asyncio.open_connection(sock=sock)
    except BaseException:
        sock.close()
        raise
    try:
        writer.write(struct.pack("!H", len(wire)) + wire)
        await writer.drain()
        (length,) = struct.unpack("!H", await reader.readexactly(2))
        return await reader.readexactly(length)
    except asyncio.IncompleteReadError as error:
        raise OSError("connection closed mid-reply") from error
    finally:
        writer.close()


def _family(upstream: Upstream) -> int:
    return socket.AF_INET6 if ":" in upstream.host else socket.AF_INET
