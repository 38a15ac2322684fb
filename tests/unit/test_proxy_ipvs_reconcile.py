"""Reconciling IPVS state: which kernel changes a desired state needs, and the ipset restore script."""

from __future__ import annotations

import struct

from kubeplane.proxy.ipvs.ipset_sync import applied_sets, ipset_restore_script, parse_ipset_save
from kubeplane.proxy.ipvs.operations import (
    IpvsOperation,
    KernelRealServer,
    KernelVirtualService,
    OperationKind,
)
from kubeplane.proxy.ipvs.reconcile import plan_ipvs_changes
from kubeplane.proxy.ipvs.state import IpSet, RealServer, VirtualServer, VirtualServerKey, VirtualService
from kubeplane.proxy.ipvs.wire import NetlinkFailure, encode_operation, parse_failures

TCP_KEY = VirtualServerKey("TCP", "10.96.0.20", 80)
UDP_KEY = VirtualServerKey("UDP", "10.96.0.10", 53)


def desired(key: VirtualServerKey, *reals: str, scheduler: str = "rr") -> VirtualService:
    return VirtualService(
        VirtualServer(key, scheduler), tuple(RealServer(r, 8080) for r in reals), service="ns1/web:p80"
    )


def kernel(
    key: VirtualServerKey, *reals: tuple[str, int, int], scheduler: str = "rr"
) -> KernelVirtualService:
    """Real servers as (address, weight, connections)."""
    return KernelVirtualService(
        VirtualServer(key, scheduler),
        tuple(KernelRealServer(RealServer(a, 8080, w), c, 0) for a, w, c in reals),
    )


def ops(current: tuple[KernelVirtualService, ...], want: tuple[VirtualService, ...]) -> list[str]:
    return [str(op) for op in plan_ipvs_changes(current, want).operations]


def test_new_service_is_added_with_its_real_servers() -> None:
    assert ops((), (desired(TCP_KEY, "10.244.1.2"),)) == [
        "add-service TCP 10.96.0.20:80",
        "add-real TCP 10.96.0.20:80 -> 10.244.1.2:8080 weight 1",
    ]


def test_matching_state_needs_no_change() -> None:
    assert ops((kernel(TCP_KEY, ("10.244.1.2", 1, 5)),), (desired(TCP_KEY, "10.244.1.2"),)) == []


def test_changed_scheduler_updates_the_service_in_place() -> None:
    current = (kernel(TCP_KEY, ("10.244.1.2", 1, 0)),)
    assert ops(current, (desired(TCP_KEY, "10.244.1.2", scheduler="lc"),)) == [
        "update-service TCP 10.96.0.20:80"
    ]


def test_removed_tcp_real_server_with_connections_drains_at_weight_zero() -> None:
    current = (kernel(TCP_KEY, ("10.244.1.2", 1, 3), ("10.244.2.2", 1, 0)),)
    changes = plan_ipvs_changes(current, (desired(TCP_KEY, "10.244.2.2"),))
    assert [str(op) for op in changes.operations] == [
        "update-real TCP 10.96.0.20:80 -> 10.244.1.2:8080 weight 0"
    ]
    assert [(str(d.real), d.connections) for d in changes.draining] == [("10.244.1.2:8080", 3)]


def test_drained_real_server_is_deleted_once_its_connections_are_gone() -> None:
    still = (kernel(TCP_KEY, ("10.244.1.2", 0, 1), ("10.244.2.2", 1, 0)),)
    assert ops(still, (desired(TCP_KEY, "10.244.2.2"),)) == []
    gone = (kernel(TCP_KEY, ("10.244.1.2", 0, 0), ("10.244.2.2", 1, 0)),)
    assert ops(gone, (desired(TCP_KEY, "10.244.2.2"),)) == [
        "delete-real TCP 10.96.0.20:80 -> 10.244.1.2:8080 weight 0"
    ]


def test_udp_real_server_is_deleted_at_once_even_with_connections() -> None:
    current = (kernel(UDP_KEY, ("10.244.1.2", 1, 4)),)
    assert ops(current, (desired(UDP_KEY),)) == ["delete-real UDP 10.96.0.10:53 -> 10.244.1.2:8080 weight 1"]


def test_draining_real_server_that_comes_back_gets_its_weight_again() -> None:
    current = (kernel(TCP_KEY, ("10.244.1.2", 0, 2)),)
    assert ops(current, (desired(TCP_KEY, "10.244.1.2"),)) == [
        "update-real TCP 10.96.0.20:80 -> 10.244.1.2:8080 weight 1"
    ]


def test_stale_virtual_server_is_deleted_after_the_adds() -> None:
    stale = VirtualServerKey("TCP", "10.96.0.99", 80)
    assert ops((kernel(stale),), (desired(TCP_KEY),)) == [
        "add-service TCP 10.96.0.20:80",
        "delete-service TCP 10.96.0.99:80",
    ]


def test_new_real_server_request_carries_every_attribute_the_kernel_requires() -> None:
    op = IpvsOperation(OperationKind.ADD_REAL, TCP_KEY, real=RealServer("10.244.1.2", 8080))
    message = encode_operation(op, family_id=0x21, seq=7)
    length, family_id, flags, seq = struct.unpack_from("=IHHI", message)
    assert (length, family_id, seq) == (len(message), 0x21, 7)
    assert flags == 0x1 | 0x400 | 0x200  # request, create, exclusive; no ack asked
    dest = _attrs(_attrs(message[20:])[2])
    assert dest[1] == bytes([10, 244, 1, 2]) and dest[2] == struct.pack("!H", 8080)
    assert struct.unpack("=I", dest[3]) == (0,)  # masquerade
    assert struct.unpack("=I", dest[4]) == (1,)  # weight
    assert 5 in dest and 6 in dest  # both thresholds: the kernel refuses a new real server without them


def test_error_replies_name_the_refused_request() -> None:
    original = encode_operation(IpvsOperation(OperationKind.DELETE_SERVICE, TCP_KEY), 0x21, seq=42)
    error = struct.pack("=IHHII", 16 + 4 + len(original), 2, 0, 42, 0) + struct.pack("=i", -2) + original
    ack = struct.pack("=IHHII", 36, 2, 0, 43, 0) + struct.pack("=i", 0) + original[:16]
    assert parse_failures(error + ack) == [NetlinkFailure(seq=42, errno=2)]


def _attrs(data: bytes) -> dict[int, bytes]:
    found = {}
    offset = 0
    while offset + 4 <= len(data):
        length, kind = struct.unpack_from("=HH", data, offset)
        found[kind & 0x3FFF] = data[offset + 4 : offset + length]
        offset += (length + 3) & ~3
    return found


SAVED = """create KUBE-CLUSTER-IP hash:ip,port family inet hashsize 1024 maxelem 65536 bucketsize 12
add KUBE-CLUSTER-IP 10.96.0.20,tcp:80
add KUBE-CLUSTER-IP 10.96.0.99,tcp:80
create OTHER hash:ip family inet hashsize 1024 maxelem 65536
"""


def test_ipset_save_is_parsed_into_entries_per_set() -> None:
    assert parse_ipset_save(SAVED) == {
        "KUBE-CLUSTER-IP": {"10.96.0.20,tcp:80", "10.96.0.99,tcp:80"},
        "OTHER": set(),
    }


def test_ipset_restore_touches_only_differences_and_creates_missing_sets() -> None:
    cluster_ip = IpSet(
        "KUBE-CLUSTER-IP", "hash:ip,port", "IPv4", "", ("10.96.0.20,tcp:80", "10.96.0.21,tcp:80")
    )
    node_ports = IpSet("KUBE-NODE-PORT-TCP", "bitmap:port", "IPv4", "", ("30080",))
    current = parse_ipset_save(SAVED)
    script, changes = ipset_restore_script((cluster_ip, node_ports), current)
    assert script.splitlines() == [
        "del KUBE-CLUSTER-IP 10.96.0.99,tcp:80",
        "add KUBE-CLUSTER-IP 10.96.0.21,tcp:80",
        "create KUBE-NODE-PORT-TCP bitmap:port range 0-65535",
        "add KUBE-NODE-PORT-TCP 30080",
    ]
    assert changes == 3
    after = applied_sets((cluster_ip, node_ports), current)
    assert ipset_restore_script((cluster_ip, node_ports), after) == ("", 0)
    assert after["OTHER"] == set()
