"""The cluster DNS server: UDP and TCP on one address, a packed-answer fast path, forwarding.

UDP queries for cluster names are answered by a thread per socket (kubeplane.dns.udp): a query seen before
(same bytes but the id) gets its stored response with the id patched in; otherwise the question is parsed
by hand, the lowercased question looked up in the current AnswerTable (packed there on first use), and id,
flags, DO bit and the question's spelling are patched into the template. TCP is served on the event loop
through the same table. Everything else (malformed packets, forwarding, CNAME chasing) runs on the loop as
a task of its own (kubeplane.dns.slow_path), so a slow upstream never holds up other queries. `update` and
`apply` bring zone and table to a new cluster incrementally (kubeplane.dns.updates). Errors in handling one
packet are logged and answered with FORMERR or dropped; they never stop the server.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import logging
import socket
import struct
import time
from collections.abc import Sequence
from dataclasses import dataclass

from prometheus_client import CollectorRegistry

from kubeplane.dns.forward import Forwarder, Upstream, parse_upstream
from kubeplane.dns.lookup import SERVFAIL
from kubeplane.dns.metrics import DnsMetrics, FastCounts
from kubeplane.dns.slow_path import Reply, SlowPath, qtype_of
from kubeplane.dns.udp import UdpResponder
from kubeplane.dns.updates import PreparedUpdate, ZoneUpdater
from kubeplane.dns.upstream_sockets import UpstreamSockets
from kubeplane.dns.wire import error_response
from kubeplane.dns.zone import Zone
from kubeplane.model.objects import Cluster
from kubeplane.store import ChangeSet, ObjectChange

log = logging.getLogger(__name__)

MAX_IN_FLIGHT = 1024  # slow-path tasks; beyond this, queries are dropped as an overloaded resolver does
TCP_IDLE_TIMEOUT = 10.0
INLINE_CHANGES = 64  # change sets up to this many objects are prepared on the loop, larger ones in a thread


class ServerStateError(RuntimeError):
    """start() on a running server, or an address asked for before start()."""


@dataclass(frozen=True)
class UpdateTiming:
    """What the last zone update cost: preparing it (wherever that ran) and installing it on the loop."""

    prepare_seconds: float
    install_seconds: float
    names_changed: int  # names whose answers were recomputed (all of them when `full`)
    full: bool


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
        explicit = None if upstreams is None else tuple(parse_upstream(u) for u in upstreams)
        self._updater = ZoneUpdater(explicit)
        self._forward_timeout = forward_timeout
        self.metrics = DnsMetrics(registry)
        self._slow_path = SlowPath(self.metrics)
        self._upstream_sockets = UpstreamSockets()
        self._tasks: set[asyncio.Task[None]] = set()
        self._udp: UdpResponder | None = None
        self._tcp: asyncio.Server | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self.address: tuple[str, int] | None = None
        self.last_update: UpdateTiming | None = None
        self._install(self._updater.build(cluster))

    @property
    def zone(self) -> Zone:
        return self.table.zone

    def update(self, cluster: Cluster, changes: Sequence[ObjectChange] | None = None) -> None:
        """Bring zone and answers to `cluster`, rebuilding only what differs from the last update
        (`changes` says what, as a store change set does; None: diffed here). Exact invalidation.

        Safe in a worker thread (`asyncio.to_thread`): the update is computed there, installed by the serving
        loop (the UDP threads see it from their next packet on), and this returns once it is served. One
        update at a time.
        """
        prepared = self._updater.prepare(cluster, changes)
        if prepared is None:  # nothing differs: serve on, but diff the next update against this snapshot
            self.cluster = cluster
            return
        loop = self._loop
        if loop is None or not loop.is_running() or _running_loop() is loop:
            self._install(prepared)
            return
        installed: concurrent.futures.Future[None] = concurrent.futures.Future()

        def install() -> None:
            try:
                self._install(prepared)
            except Exception as error:  # handed to the waiting caller, who raises it
                installed.set_exception(error)
            else:
                installed.set_result(None)

        loop.call_soon_threadsafe(install)
        installed.result()

    async def apply(self, change_set: ChangeSet) -> None:
        """`update` for a store change set, from the serving loop: a few changes are computed right here
        (milliseconds), more (a first state, a configuration change) in a worker thread."""
        changes = change_set.changes if change_set.previous is self.cluster else None
        small = changes is not None and len(changes) <= INLINE_CHANGES
        if small and not change_set.of_kind("KubeplaneConfiguration"):
            prepared = self._updater.prepare(change_set.cluster, changes)
        else:
            prepared = await asyncio.to_thread(self._updater.prepare, change_set.cluster, changes)
        if prepared is not None:
            self._install(prepared)
        else:
            self.cluster = change_set.cluster

    def _install(self, prepared: PreparedUpdate) -> None:
        """Serve `prepared` from now on; runs on the serving loop (or before the server starts)."""
        started = time.perf_counter()
        self._set_upstreams(prepared.upstreams)
        if prepared.table is not None:
            self.table = prepared.table
        else:
            self.table.apply(prepared.delta, prepared.packed)
        self.cluster = prepared.cluster
        zone = prepared.delta.zone
        self.metrics.cluster_zone = zone.origin
        self.last_update = UpdateTiming(
            prepared.seconds,
            time.perf_counter() - started,
            len(prepared.delta.affected_names),
            prepared.delta.full,
        )
        log.info(
            "dns zone updated names=%d names_changed=%d full=%s prepare_seconds=%.4f install_seconds=%.4f",
            len(zone.records),
            self.last_update.names_changed,
            self.last_update.full,
            self.last_update.prepare_seconds,
            self.last_update.install_seconds,
        )

    def _set_upstreams(self, upstreams: tuple[Upstream, ...]) -> None:
        current = self._slow_path.forwarder
        if current is not None and current.upstreams == upstreams:
            return
        self._slow_path.forwarder = (
            Forwarder(upstreams, timeout=self._forward_timeout, sockets=self._upstream_sockets)
            if upstreams
            else None
        )

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
        self._loop = asyncio.get_running_loop()
        self._upstream_sockets = UpstreamSockets(like=udp_sock)  # forward from where we listen
        if self._slow_path.forwarder is not None:
            self._slow_path.forwarder.sockets = self._upstream_sockets
        udp_counts = self.metrics.fast_counts("udp", _family_label(udp_sock))
        self._udp = UdpResponder(self, udp_sock, udp_counts)
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
        self._upstream_sockets.close()

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

    def hand_over(
        self, query: bytes, addr: tuple[str | int, ...], responder: UdpResponder, started: float
    ) -> None:
        """From a UDP thread: answer a query the table missed on the loop, in a task of its own."""
        loop = self._loop
        if loop is None:
            return
        try:
            loop.call_soon_threadsafe(self._spawn_slow, query, addr, responder, started)
        except RuntimeError:  # the loop has closed: the server is going away
            log.debug("dns query dropped reason=stopped client=%s", addr[0])

    def _spawn_slow(
        self, query: bytes, addr: tuple[str | int, ...], responder: UdpResponder, started: float
    ) -> None:
        if len(self._tasks) >= MAX_IN_FLIGHT:
            log.debug("dns query dropped reason=overload client=%s", addr[0])
            return
        task = asyncio.get_running_loop().create_task(self._udp_slow(query, addr, responder, started))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _udp_slow(
        self, query: bytes, addr: tuple[str | int, ...], responder: UdpResponder, started: float
    ) -> None:
        wire = await self._respond_slow(query, False, responder.family, started)
        if wire is not None:
            responder.send(wire, addr)

    async def _respond_slow(self, query: bytes, via_tcp: bool, family: str, started: float) -> bytes | None:
        try:
            reply = await self._slow_path.answer(self.table, query, via_tcp)
        except Exception:
            log.exception("dns query failed size=%d", len(query))
            reply = Reply(error_response(query, SERVFAIL), SERVFAIL, ".", "")
        if reply.wire is not None:
            self.metrics.observe(
                reply.zone,
                "tcp" if via_tcp else "udp",
                family,
                qtype_of(query),
                reply.rcode,
                reply.plugin,
                time.perf_counter() - started,
            )
        return reply.wire

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


def _running_loop() -> asyncio.AbstractEventLoop | None:
    try:
        return asyncio.get_running_loop()
    except RuntimeError:
        return None


def _family_label(sock: socket.socket) -> str:
    """CoreDNS's `family` label: 1 for IPv4, 2 for IPv6."""
    return "2" if sock.family == socket.AF_INET6 else "1"


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
