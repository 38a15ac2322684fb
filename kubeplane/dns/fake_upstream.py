"""A scriptable upstream resolver on loopback, for tests of forwarding and for trying `dns serve` by hand.

It answers A questions from a fixed table (NXDOMAIN with an SOA otherwise) over UDP and TCP, and can be told
to answer late, to truncate every UDP answer (so clients must retry over TCP), or to never answer. It records
every question it receives, so a test can tell what reached the upstream and what a cache absorbed.
"""

from __future__ import annotations

import asyncio
import struct
from collections.abc import Coroutine, Mapping
from dataclasses import dataclass, field
from typing import Any, cast

import dnslib

NEGATIVE_TTL = 30


@dataclass(frozen=True)
class ReceivedQuestion:
    proto: str
    qname: str
    qtype: int


@dataclass
class FakeUpstream:
    answers: Mapping[str, tuple[str, ...]]  # lowercase absolute name -> IPv4 addresses
    ttl: int = 30
    delay: float = 0.0
    truncate_udp: bool = False
    silent: bool = False
    host: str = "127.0.0.1"
    received: list[ReceivedQuestion] = field(default_factory=list)
    _udp: asyncio.DatagramTransport | None = None
    _tcp: asyncio.Server | None = None
    _tasks: set[asyncio.Task[None]] = field(default_factory=set)

    @property
    def address(self) -> str:
        """`ip:port`, as `upstream_resolvers` and `--upstream` take it."""
        if self._udp is None:
            raise RuntimeError("FakeUpstream not started")
        return "{}:{}".format(*self._udp.get_extra_info("sockname")[:2])

    async def start(self) -> str:
        loop = asyncio.get_running_loop()
        for _ in range(8):
            transport, _ = await loop.create_datagram_endpoint(
                lambda: _UdpSide(self), local_addr=(self.host, 0)
            )
            port = transport.get_extra_info("sockname")[1]
            try:
                self._tcp = await asyncio.start_server(self._serve_tcp, self.host, port)
            except OSError:
                transport.close()
                continue
            self._udp = cast(asyncio.DatagramTransport, transport)
            return self.address
        raise OSError("no free loopback port for UDP and TCP")

    async def stop(self) -> None:
        if self._udp is not None:
            self._udp.close()
        if self._tcp is not None:
            self._tcp.close()
            await self._tcp.wait_closed()
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)

    async def __aenter__(self) -> FakeUpstream:
        await self.start()
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.stop()

    def reply_for(self, query: dnslib.DNSRecord, proto: str) -> bytes:
        qname = str(query.q.qname).lower()
        self.received.append(ReceivedQuestion(proto, qname, query.q.qtype))
        reply = query.reply(ra=1, aa=1)
        addresses = self.answers.get(qname, ())
        if addresses and query.q.qtype == dnslib.QTYPE.A:
            for ip in addresses:
                reply.add_answer(dnslib.RR(query.q.qname, dnslib.QTYPE.A, rdata=dnslib.A(ip), ttl=self.ttl))
        elif not addresses:
            reply.header.rcode = dnslib.RCODE.NXDOMAIN
            soa = dnslib.SOA("ns.upstream.", "hostmaster.upstream.", (1, 3600, 600, 86400, NEGATIVE_TTL))
            reply.add_auth(dnslib.RR("upstream.", dnslib.QTYPE.SOA, rdata=soa, ttl=NEGATIVE_TTL))
        if proto == "udp" and self.truncate_udp:
            reply = dnslib.DNSRecord(dnslib.DNSHeader(id=query.header.id, qr=1, tc=1), q=query.q)
        return bytes(reply.pack())

    def spawn(self, coroutine: Coroutine[Any, Any, None]) -> None:
        task = asyncio.get_running_loop().create_task(coroutine)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def answer_udp(self, data: bytes, addr: tuple[str | int, ...]) -> None:
        query = dnslib.DNSRecord.parse(data)
        await asyncio.sleep(self.delay)
        if self._udp is not None:
            self._udp.sendto(self.reply_for(query, "udp"), addr)

    async def _serve_tcp(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            (length,) = struct.unpack("!H", await reader.readexactly(2))
            query = dnslib.DNSRecord.parse(await reader.readexactly(length))
            await asyncio.sleep(self.delay)
            if not self.silent:
                wire = self.reply_for(query, "tcp")
                writer.write(struct.pack("!H", len(wire)) + wire)
                await writer.drain()
        except asyncio.IncompleteReadError:
            pass
        finally:
            writer.close()


class _UdpSide(asyncio.DatagramProtocol):
    def __init__(self, upstream: FakeUpstream) -> None:
        self.upstream = upstream

    def datagram_received(self, data: bytes, addr: tuple[str | int, ...]) -> None:
        if self.upstream.silent:
            query = dnslib.DNSRecord.parse(data)
            self.upstream.received.append(ReceivedQuestion("udp", str(query.q.qname).lower(), query.q.qtype))
            return
        self.upstream.spawn(self.upstream.answer_udp(data, addr))
