"""The vocabulary between the reconciler and the kernel: IPVS changes to make, and the kernel's view of a
virtual service (with the connection counts that graceful deletion waits on)."""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum

from kubeplane.proxy.ipvs.state import RealServer, VirtualServer, VirtualServerKey


class OperationKind(StrEnum):
    ADD_SERVICE = "add-service"
    UPDATE_SERVICE = "update-service"
    DELETE_SERVICE = "delete-service"
    ADD_REAL = "add-real"
    UPDATE_REAL = "update-real"
    DELETE_REAL = "delete-real"


@dataclass(frozen=True)
class IpvsOperation:
    """One change to the kernel's IPVS tables. Service operations carry the full `server`; real-server
    operations carry the key of their virtual server and the `real` server."""

    kind: OperationKind
    key: VirtualServerKey
    server: VirtualServer | None = None
    real: RealServer | None = None

    def __str__(self) -> str:
        target = f" -> {self.real} weight {self.real.weight}" if self.real else ""
        return f"{self.kind} {self.key}{target}"


@dataclass(frozen=True)
class KernelRealServer:
    """A real server as the kernel reports it, with its connection counts."""

    real: RealServer
    active_connections: int
    inactive_connections: int

    @property
    def connections(self) -> int:
        return self.active_connections + self.inactive_connections


@dataclass(frozen=True)
class KernelVirtualService:
    server: VirtualServer
    real_servers: tuple[KernelRealServer, ...]

    @property
    def key(self) -> VirtualServerKey:
        return self.server.key
