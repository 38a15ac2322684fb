"""IPVS over generic netlink in one network namespace: dump and change virtual and real servers.

Dumps go through pyroute2's IPVS socket, which decodes the kernel's replies (and resolves the IPVS family
id). Changes go out as packed bytes (kubeplane.proxy.ipvs.wire) on a plain netlink socket opened in the
namespace, BATCH_SIZE requests per sendmsg, without acknowledgements: the kernel handles a sendmsg to
itself synchronously, so once it returns, every refusal is already waiting in the socket. A refused "add"
of something that exists becomes an update and a refused "delete" of something gone counts as done, so a
sync converges whatever state it starts from.
"""

from __future__ import annotations

import errno
import logging
import socket
from collections.abc import Iterable, Sequence
from typing import Any

from pyroute2.netlink import NLM_F_DUMP, NLM_F_REQUEST
from pyroute2.netlink.exceptions import NetlinkError
from pyroute2.netlink.generic import ipvs as genl

from kubeplane.model.objects import Protocol
from kubeplane.netns.nsfs import in_netns
from kubeplane.proxy.ipvs.operations import (
    IpvsOperation,
    KernelRealServer,
    KernelVirtualService,
    OperationKind,
)
from kubeplane.proxy.ipvs.state import (
    FLAG_HASHED,
    FLAG_PERSISTENT,
    FLAG_SCHED_MH_PORT,
    RealServer,
    VirtualServer,
    VirtualServerKey,
)
from kubeplane.proxy.ipvs.wire import PROTOCOL_NUMBERS, encode_operation, parse_failures

log = logging.getLogger(__name__)

BATCH_SIZE = 1000
NETLINK_GENERIC = 16
SOCKET_BUFFER = 8 << 20
SO_SNDBUFFORCE, SO_RCVBUFFORCE = 32, 33
_PROTOCOL_NAMES: dict[int, Protocol] = {number: name for name, number in PROTOCOL_NUMBERS.items()}  # type: ignore[misc]
_ALREADY_THERE = (errno.EEXIST,)
_ALREADY_GONE = (errno.ENOENT, errno.ESRCH)
_UPDATE_OF = {
    OperationKind.ADD_SERVICE: OperationKind.UPDATE_SERVICE,
    OperationKind.ADD_REAL: OperationKind.UPDATE_REAL,
}


class IpvsUnavailable(RuntimeError):
    """The namespace's kernel has no IPVS (module missing, or not loadable here)."""


class IpvsRequestFailed(RuntimeError):
    """The kernel refused an IPVS change; the message names the change and the errno."""


class _RepliesLost(Exception):
    """The socket's receive buffer overflowed: which requests failed is unknown."""


def _service_key_attrs(key: VirtualServerKey) -> list[tuple[str, Any]]:
    # AF first: pyroute2 encodes ADDR according to the AF attribute that precedes it.
    return [
        ("IPVS_SVC_ATTR_AF", socket.AF_INET6 if key.family == "IPv6" else socket.AF_INET),
        ("IPVS_SVC_ATTR_PROTOCOL", PROTOCOL_NUMBERS[key.protocol]),
        ("IPVS_SVC_ATTR_ADDR", key.address),
        ("IPVS_SVC_ATTR_PORT", key.port),
    ]


def _dump_message(cmd: int, attrs: list[tuple[str, Any]]) -> genl.ipvsmsg:
    msg = genl.ipvsmsg()
    msg["cmd"] = cmd
    msg["version"] = genl.GENL_VERSION
    msg["attrs"] = attrs
    return msg


def open_netlink_socket(netns: str | None, protocol: int) -> socket.socket:
    """A non-blocking netlink socket of `protocol` in `netns`, with buffers big enough for batches."""

    def make() -> socket.socket:
        sock = socket.socket(socket.AF_NETLINK, socket.SOCK_RAW, protocol)
        sock.setsockopt(socket.SOL_SOCKET, SO_SNDBUFFORCE, SOCKET_BUFFER)
        sock.setsockopt(socket.SOL_SOCKET, SO_RCVBUFFORCE, SOCKET_BUFFER)
        sock.bind((0, 0))
        sock.setblocking(False)
        return sock

    return in_netns(netns, make) if netns else make()


def pyroute2_socket(netns: str | None, protocol: int) -> socket.socket:
    """A netlink socket in `netns` for pyroute2's `use_socket`: opened on a thread that entered the
    namespace, because pyroute2's own netns support forks a helper process, which costs seconds when the
    caller holds a 10k-service plan in memory under UML."""

    def make() -> socket.socket:
        return socket.socket(socket.AF_NETLINK, socket.SOCK_DGRAM, protocol)

    return in_netns(netns, make) if netns else make()


class IpvsNetlink:
    """IPVS netlink sockets in `netns` (None: the current namespace). Use as a context manager."""

    def __init__(self, netns: str | None) -> None:
        self.netns = netns
        self._sock = genl.IPVSSocket(use_socket=pyroute2_socket(netns, NETLINK_GENERIC))
        try:
            self._sock.bind(genl.GENL_NAME, genl.ipvsmsg)
            self._family_id: int = self._sock.prid
        except NetlinkError as err:
            self._sock.close()
            raise IpvsUnavailable(f"no IPVS in the kernel of netns {netns}: {err}") from err
        self._raw = open_netlink_socket(netns, NETLINK_GENERIC)
        self._seq = 1

    def close(self) -> None:
        self._raw.close()
        self._sock.close()

    def __enter__(self) -> IpvsNetlink:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _dump(self, msg: genl.ipvsmsg) -> list[Any]:
        return list(
            self._sock.nlm_request(msg, msg_type=self._family_id, msg_flags=NLM_F_REQUEST | NLM_F_DUMP)
        )

    def dump_servers(self) -> list[VirtualServer]:
        """Every address-based virtual server of the namespace (firewall-mark services are not ours)."""
        servers = []
        for msg in self._dump(_dump_message(genl.IPVS_CMD_GET_SERVICE, [])):
            attrs = msg.get_attr("IPVS_CMD_ATTR_SERVICE")
            address = attrs.get_attr("IPVS_SVC_ATTR_ADDR")
            protocol = _PROTOCOL_NAMES.get(attrs.get_attr("IPVS_SVC_ATTR_PROTOCOL"))
            if address is None or protocol is None:
                continue
            flags = attrs.get_attr("IPVS_SVC_ATTR_FLAGS")["flags"] & ~FLAG_HASHED
            timeout = attrs.get_attr("IPVS_SVC_ATTR_TIMEOUT") if flags & FLAG_PERSISTENT else None
            servers.append(
                VirtualServer(
                    key=VirtualServerKey(protocol, address, attrs.get_attr("IPVS_SVC_ATTR_PORT")),
                    scheduler=attrs.get_attr("IPVS_SVC_ATTR_SCHED_NAME"),
                    persistence_timeout=timeout,
                    source_port_hash=bool(flags & FLAG_SCHED_MH_PORT),
                )
            )
        return servers

    def dump_real_servers(self, key: VirtualServerKey) -> tuple[KernelRealServer, ...]:
        msg = _dump_message(
            genl.IPVS_CMD_GET_DEST, [("IPVS_CMD_ATTR_SERVICE", {"attrs": _service_key_attrs(key)})]
        )
        reals = []
        for reply in self._dump(msg):
            attrs = reply.get_attr("IPVS_CMD_ATTR_DEST")
            real = RealServer(
                address=attrs.get_attr("IPVS_DEST_ATTR_ADDR"),
                port=attrs.get_attr("IPVS_DEST_ATTR_PORT"),
                weight=attrs.get_attr("IPVS_DEST_ATTR_WEIGHT"),
            )
            active = attrs.get_attr("IPVS_DEST_ATTR_ACTIVE_CONNS") or 0
            inactive = attrs.get_attr("IPVS_DEST_ATTR_INACT_CONNS") or 0
            reals.append(KernelRealServer(real, active, inactive))
        return tuple(sorted(reals, key=lambda r: r.real.endpoint))

    def real_servers_of(self, key: VirtualServerKey) -> tuple[KernelRealServer, ...] | None:
        """The real servers of one virtual server, or None when the kernel has no such virtual server."""
        try:
            return self.dump_real_servers(key)
        except NetlinkError as err:
            if err.code in _ALREADY_GONE:
                return None
            raise

    def dump(self, keys: Iterable[VirtualServerKey] | None = None) -> tuple[KernelVirtualService, ...]:
        """Virtual services with their real servers: all of them, or only those with `keys`."""
        servers = self.dump_servers()
        if keys is not None:
            wanted = set(keys)
            servers = [s for s in servers if s.key in wanted]
        servers.sort(key=lambda s: s.key)
        return tuple(KernelVirtualService(s, self.dump_real_servers(s.key)) for s in servers)

    def apply(self, operations: Sequence[IpvsOperation]) -> list[IpvsRequestFailed]:
        """Run `operations` in order; returns the changes the kernel would not make."""
        failures: list[IpvsRequestFailed] = []
        for start in range(0, len(operations), BATCH_SIZE):
            chunk = operations[start : start + BATCH_SIZE]
            refused: list[tuple[IpvsOperation, int | None]]
            try:
                refused = list(self._send(chunk))
            except _RepliesLost:
                refused = [(op, None) for op in chunk]  # replay each, tolerating what already happened
            for op, code in refused:
                failure = self._settle(op, code)
                if failure is not None:
                    failures.append(failure)
        return failures

    def _send(self, chunk: Sequence[IpvsOperation]) -> list[tuple[IpvsOperation, int]]:
        first = self._seq
        self._seq += len(chunk)
        self._raw.send(
            b"".join(encode_operation(op, self._family_id, first + i) for i, op in enumerate(chunk))
        )
        refused: list[tuple[IpvsOperation, int]] = []
        while True:
            try:
                data = self._raw.recv(1 << 20)
            except BlockingIOError:
                return refused
            except OSError as err:
                if err.errno == errno.ENOBUFS:
                    raise _RepliesLost from err
                raise
            for failure in parse_failures(data):
                if first <= failure.seq < first + len(chunk):
                    refused.append((chunk[failure.seq - first], failure.errno))

    def _settle(self, op: IpvsOperation, code: int | None) -> IpvsRequestFailed | None:
        """Decide about a refused (or, with code None, unconfirmed) operation: retry it alone if unconfirmed,
        turn an add of something present into an update, accept a delete of something absent."""
        if code is None:
            refused = self._send((op,))
            if not refused:
                return None
            code = refused[0][1]
        if op.kind in _UPDATE_OF and code in _ALREADY_THERE:
            update = IpvsOperation(_UPDATE_OF[op.kind], op.key, op.server, op.real)
            refused = self._send((update,))
            if not refused:
                return None
            code = refused[0][1]
        elif op.kind in (OperationKind.DELETE_SERVICE, OperationKind.DELETE_REAL) and code in _ALREADY_GONE:
            return None
        log.warning("ipvs request failed op=%s errno=%s", op, code)
        return IpvsRequestFailed(f"{op}: {errno.errorcode.get(code, str(code))}")
