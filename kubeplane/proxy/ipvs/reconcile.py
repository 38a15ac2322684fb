"""Diff desired virtual services against the kernel's and list the IPVS changes that close the gap (pure).

Only what differs is touched: a virtual server whose scheduler, persistence or flags changed is updated in
place (its VIP never goes away), real servers are added, re-weighted or removed one by one. Removal is
graceful for TCP, as kube-proxy's graceful termination manager does it: a real server that still has
connections is set to weight 0, so it gets no new connections while its open ones finish, and is deleted by
a later sync once the kernel counts none. UDP and SCTP real servers are deleted at once (kube-proxy's choice:
the kernel expires their flows on the next packet, as expire_nodest_conn is set). A draining real server that
becomes desired again just gets its weight back.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from kubeplane.proxy.ipvs.operations import IpvsOperation, KernelVirtualService, OperationKind
from kubeplane.proxy.ipvs.state import RealServer, VirtualServerKey, VirtualService

GRACEFUL_PROTOCOLS = frozenset({"TCP"})


@dataclass(frozen=True)
class DrainingRealServer:
    """A real server left at weight 0 because it still carries connections."""

    key: VirtualServerKey
    real: RealServer
    connections: int


@dataclass(frozen=True)
class IpvsChanges:
    """The operations to run, in order, and the real servers that stay behind draining."""

    operations: tuple[IpvsOperation, ...]
    draining: tuple[DrainingRealServer, ...]


def plan_ipvs_changes(
    current: Sequence[KernelVirtualService], desired: Sequence[VirtualService]
) -> IpvsChanges:
    """The operations that turn `current` (one family's kernel state) into `desired`."""
    current_by_key = {vs.key: vs for vs in current}
    service_ops: list[IpvsOperation] = []
    real_ops: list[IpvsOperation] = []
    drain_ops: list[IpvsOperation] = []
    delete_ops: list[IpvsOperation] = []
    draining: list[DrainingRealServer] = []

    for want in desired:
        key = want.key
        have = current_by_key.get(key)
        if have is None:
            service_ops.append(IpvsOperation(OperationKind.ADD_SERVICE, key, server=want.server))
            real_ops.extend(IpvsOperation(OperationKind.ADD_REAL, key, real=r) for r in want.real_servers)
            continue
        if not have.server.same_settings(want.server):
            service_ops.append(IpvsOperation(OperationKind.UPDATE_SERVICE, key, server=want.server))
        have_reals = {r.real.endpoint: r for r in have.real_servers}
        want_endpoints = set()
        for real in want.real_servers:
            want_endpoints.add(real.endpoint)
            existing = have_reals.get(real.endpoint)
            if existing is None:
                real_ops.append(IpvsOperation(OperationKind.ADD_REAL, key, real=real))
            elif existing.real.weight != real.weight:
                real_ops.append(IpvsOperation(OperationKind.UPDATE_REAL, key, real=real))
        for endpoint, stale in have_reals.items():
            if endpoint in want_endpoints:
                continue
            if key.protocol not in GRACEFUL_PROTOCOLS or stale.connections == 0:
                delete_ops.append(IpvsOperation(OperationKind.DELETE_REAL, key, real=stale.real))
                continue
            draining.append(
                DrainingRealServer(key, RealServer(stale.real.address, stale.real.port, 0), stale.connections)
            )
            if stale.real.weight != 0:
                drained = RealServer(stale.real.address, stale.real.port, weight=0)
                drain_ops.append(IpvsOperation(OperationKind.UPDATE_REAL, key, real=drained))

    desired_keys = {vs.key for vs in desired}
    for have in current:
        if have.key not in desired_keys:
            delete_ops.append(IpvsOperation(OperationKind.DELETE_SERVICE, have.key, server=have.server))
    return IpvsChanges(
        operations=(*service_ops, *real_ops, *drain_ops, *delete_ops), draining=tuple(draining)
    )
