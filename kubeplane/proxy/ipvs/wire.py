"""IPVS generic-netlink change requests as bytes, and the error replies they may get back (pure).

pyroute2's message classes take about 160 us to encode one request; a 10k-service sync sends 110k of them.
Change requests have a fixed, small shape (include/uapi/linux/ip_vs.h), so they are packed here with
`struct` directly; dumps, which need real decoding, stay with pyroute2. Requests go out without NLM_F_ACK:
the kernel then answers only the failures, each carrying the sequence number of the request it refuses.
"""

from __future__ import annotations

import ipaddress
import socket
import struct
from dataclasses import dataclass
from functools import lru_cache

from kubeplane.proxy.ipvs.operations import IpvsOperation, OperationKind
from kubeplane.proxy.ipvs.state import FORWARD_MASQ, RealServer, VirtualServer, VirtualServerKey

NLM_F_REQUEST = 0x1
NLM_F_EXCL = 0x200
NLM_F_CREATE = 0x400
NLMSG_ERROR = 2
GENL_VERSION = 1

IPVS_CMD_NEW_SERVICE, IPVS_CMD_SET_SERVICE, IPVS_CMD_DEL_SERVICE = 1, 2, 3
IPVS_CMD_NEW_DEST, IPVS_CMD_SET_DEST, IPVS_CMD_DEL_DEST = 5, 6, 7
CMD_ATTR_SERVICE, CMD_ATTR_DEST = 1, 2
SVC_AF, SVC_PROTOCOL, SVC_ADDR, SVC_PORT = 1, 2, 3, 4
SVC_SCHED_NAME, SVC_FLAGS, SVC_TIMEOUT, SVC_NETMASK = 6, 7, 8, 9
DEST_ADDR, DEST_PORT, DEST_FWD_METHOD, DEST_WEIGHT, DEST_U_THRESH, DEST_L_THRESH = 1, 2, 3, 4, 5, 6
DEST_ADDR_FAMILY = 11
PROTOCOL_NUMBERS = {"TCP": socket.IPPROTO_TCP, "UDP": socket.IPPROTO_UDP, "SCTP": 132}
FLAGS_MASK = 0xFFFFFFFF

_COMMANDS = {
    OperationKind.ADD_SERVICE: (IPVS_CMD_NEW_SERVICE, NLM_F_CREATE | NLM_F_EXCL),
    OperationKind.UPDATE_SERVICE: (IPVS_CMD_SET_SERVICE, 0),
    OperationKind.DELETE_SERVICE: (IPVS_CMD_DEL_SERVICE, 0),
    OperationKind.ADD_REAL: (IPVS_CMD_NEW_DEST, NLM_F_CREATE | NLM_F_EXCL),
    OperationKind.UPDATE_REAL: (IPVS_CMD_SET_DEST, 0),
    OperationKind.DELETE_REAL: (IPVS_CMD_DEL_DEST, 0),
}


def _attr(kind: int, payload: bytes) -> bytes:
    length = 4 + len(payload)
    return struct.pack("=HH", length, kind) + payload + b"\0" * (-length % 4)


def _u16(kind: int, value: int) -> bytes:
    return _attr(kind, struct.pack("=H", value))


def _u32(kind: int, value: int) -> bytes:
    return _attr(kind, struct.pack("=I", value))


def _be16(kind: int, value: int) -> bytes:
    return _attr(kind, struct.pack("!H", value))


@lru_cache(maxsize=1 << 17)
def _address(address: str) -> tuple[int, bytes]:
    ip = ipaddress.ip_address(address)
    return (socket.AF_INET6 if ip.version == 6 else socket.AF_INET), ip.packed


def service_key_attrs(key: VirtualServerKey) -> bytes:
    family, packed = _address(key.address)
    return (
        _u16(SVC_AF, family)
        + _u16(SVC_PROTOCOL, PROTOCOL_NUMBERS[key.protocol])
        + _attr(SVC_ADDR, packed)
        + _be16(SVC_PORT, key.port)
    )


def service_attrs(server: VirtualServer) -> bytes:
    family, _ = _address(server.key.address)
    netmask = 0xFFFFFFFF if family == socket.AF_INET else 128  # a be32 mask, or the IPv6 prefix length
    return (
        service_key_attrs(server.key)
        + _attr(SVC_SCHED_NAME, server.scheduler.encode() + b"\0")
        + _attr(SVC_FLAGS, struct.pack("=II", server.flags, FLAGS_MASK))
        + _u32(SVC_TIMEOUT, server.timeout)
        + _attr(SVC_NETMASK, struct.pack("!I", netmask))
    )


def real_attrs(real: RealServer, full: bool) -> bytes:
    family, packed = _address(real.address)
    attrs = _u16(DEST_ADDR_FAMILY, family) + _attr(DEST_ADDR, packed) + _be16(DEST_PORT, real.port)
    if full:
        attrs += (
            _u32(DEST_FWD_METHOD, FORWARD_MASQ)
            + _u32(DEST_WEIGHT, real.weight)
            + _u32(DEST_U_THRESH, 0)
            + _u32(DEST_L_THRESH, 0)
        )
    return attrs


def encode_operation(op: IpvsOperation, family_id: int, seq: int) -> bytes:
    """One netlink message (header included) for `op`, asking for no acknowledgement."""
    cmd, flags = _COMMANDS[op.kind]
    if op.kind in (OperationKind.ADD_SERVICE, OperationKind.UPDATE_SERVICE):
        assert op.server is not None
        payload = _attr(CMD_ATTR_SERVICE, service_attrs(op.server))
    else:
        payload = _attr(CMD_ATTR_SERVICE, service_key_attrs(op.key))
        if op.real is not None:
            payload += _attr(CMD_ATTR_DEST, real_attrs(op.real, op.kind != OperationKind.DELETE_REAL))
    body = struct.pack("=BBH", cmd, GENL_VERSION, 0) + payload
    return struct.pack("=IHHII", 16 + len(body), family_id, NLM_F_REQUEST | flags, seq, 0) + body


@dataclass(frozen=True)
class NetlinkFailure:
    """The kernel refused the request with sequence number `seq` with `errno`."""

    seq: int
    errno: int


def parse_failures(data: bytes) -> list[NetlinkFailure]:
    """The error replies in a buffer of netlink messages (errno 0, an acknowledgement, is not a failure)."""
    failures = []
    offset = 0
    while offset + 16 <= len(data):
        length, kind = struct.unpack_from("=IH", data, offset)
        if length < 16:
            break
        if kind == NLMSG_ERROR and length >= 36:
            (error,) = struct.unpack_from("=i", data, offset + 16)
            (seq,) = struct.unpack_from("=I", data, offset + 20 + 8)
            if error:
                failures.append(NetlinkFailure(seq=seq, errno=-error))
        offset += (length + 3) & ~3
    return failures
