"""Per-service healthCheckNodePort HTTP servers, as kube-proxy's service health server runs them.

A LoadBalancer service with externalTrafficPolicy=Local gets a TCP port on every node; an external load
balancer probes it to learn whether the node has local endpoints. Any request gets a JSON body
`{"service":{"namespace":..,"name":..},"localEndpoints":N,"serviceProxyHealthy":bool}`, status 200 when
N > 0 and the proxy is healthy, else 503, plus kube-proxy's `X-Load-Balancing-Endpoint-Weight: N` header.

Servers listen on a socket created inside the node's namespace (kubeplane.netns.nsfs.open_socket_in_netns),
so one event loop in the daemon serves every node. Asyncio only: they live as long as the loop.
"""

from __future__ import annotations

import asyncio
import json
import logging
import socket
from collections.abc import Callable
from dataclasses import dataclass

from kubeplane.netns.nsfs import bound_socket, open_socket_in_netns
from kubeplane.proxy.plan import NodePlan

log = logging.getLogger(__name__)

REQUEST_HEAD_LIMIT = 8192
REQUEST_TIMEOUT_SECONDS = 5.0


@dataclass(frozen=True)
class HealthCheckService:
    """What one health check port reports."""

    namespace: str
    name: str
    port: int
    local_endpoints: int


def health_check_services(plan: NodePlan) -> tuple[HealthCheckService, ...]:
    """One entry per service with a healthCheckNodePort; local endpoints are this node's ready ones.

    A dual-stack service is counted in its IPv4 family only (a dual-stack pod has one address per family
    and must count once); a single-stack IPv6 service by its IPv6 endpoints."""
    found: dict[str, HealthCheckService] = {}
    for family in ("IPv4", "IPv6"):
        counted = set(found)
        local_ips: dict[str, set[str]] = {}
        for sp in plan.ports_for(family):
            if not sp.health_check_node_port or sp.service_key in counted:
                continue
            ips = local_ips.setdefault(sp.service_key, set())
            ips.update(ep.ip for ep in sp.endpoints if ep.is_local and ep.ready)
            found[sp.service_key] = HealthCheckService(
                sp.namespace, sp.name, sp.health_check_node_port, len(ips)
            )
    return tuple(found.values())


def response_bytes(service: HealthCheckService, proxy_healthy: bool) -> bytes:
    """The full HTTP response kube-proxy's handler writes for `service`."""
    body = json.dumps(
        {
            "service": {"namespace": service.namespace, "name": service.name},
            "localEndpoints": service.local_endpoints,
            "serviceProxyHealthy": proxy_healthy,
        },
        separators=(",", ":"),
    ).encode()
    ok = service.local_endpoints > 0 and proxy_healthy
    status = "200 OK" if ok else "503 Service Unavailable"
    head = (
        f"HTTP/1.1 {status}\r\n"
        "Content-Type: application/json\r\n"
        "X-Content-Type-Options: nosniff\r\n"
        f"X-Load-Balancing-Endpoint-Weight: {service.local_endpoints}\r\n"
        f"Content-Length: {len(body)}\r\n"
        "Connection: close\r\n\r\n"
    )
    return head.encode() + body


class HealthCheckServers:
    """The health check listeners of one node; `update` opens, closes and refreshes them from a plan.

    Without an `address` a port listens on every address of both families, as kube-proxy's `:port`
    listener does, so a dual-stack load balancer can probe the node's IPv6 address too.

    `proxy_health`, when given, is asked at each request whether the node's proxy is healthy (kube-proxy
    reads its healthz state the same way), so a stuck sync shows in `serviceProxyHealthy` at once;
    without it, the value passed to the last `update` is reported."""

    def __init__(
        self, netns: str | None, address: str | None = None, proxy_health: Callable[[], bool] | None = None
    ) -> None:
        self.netns = netns
        self.address = address
        self.proxy_healthy = True
        self._proxy_health = proxy_health
        self._services: dict[int, HealthCheckService] = {}
        self._servers: dict[int, list[asyncio.Server]] = {}

    @property
    def ports(self) -> tuple[int, ...]:
        return tuple(sorted(self._servers))

    async def update(self, plan: NodePlan, proxy_healthy: bool = True) -> None:
        """Serve exactly the plan's health check ports; a port that cannot be opened is logged and retried
        at the next update, as kube-proxy does."""
        self.proxy_healthy = proxy_healthy
        wanted = {svc.port: svc for svc in health_check_services(plan)}
        for port in set(self._servers) - set(wanted):
            await _close_all(self._servers.pop(port))
            self._services.pop(port, None)
        self._services.update(wanted)
        for port in set(wanted) - set(self._servers):
            try:
                self._servers[port] = await self._listen(port)
            except OSError as err:
                log.error("health check listen failed netns=%s port=%d error=%s", self.netns, port, err)

    async def close(self) -> None:
        for servers in self._servers.values():
            await _close_all(servers)
        self._servers.clear()
        self._services.clear()

    async def _listen(self, port: int) -> list[asyncio.Server]:
        """One server per family bound; an IPv6 wildcard that cannot bind (IPv6 disabled) is skipped."""

        async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            await self._answer(port, reader, writer)

        if self.address is not None:
            family = socket.AF_INET6 if ":" in self.address else socket.AF_INET
            return [await asyncio.start_server(handle, sock=self._socket(family, self.address, port))]
        servers = [await asyncio.start_server(handle, sock=self._socket(socket.AF_INET, "0.0.0.0", port))]
        try:
            servers.append(await asyncio.start_server(handle, sock=self._socket(socket.AF_INET6, "::", port)))
        except OSError as err:
            log.warning("health check IPv6 listen skipped netns=%s port=%d error=%s", self.netns, port, err)
        return servers

    def _socket(self, family: int, address: str, port: int) -> socket.socket:
        if self.netns is None:
            return bound_socket(family, socket.SOCK_STREAM, (address, port))
        return open_socket_in_netns(self.netns, family, socket.SOCK_STREAM, (address, port))

    async def _answer(self, port: int, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), REQUEST_TIMEOUT_SECONDS)
            service = self._services.get(port)
            if service is not None:
                healthy = self._proxy_health() if self._proxy_health is not None else self.proxy_healthy
                writer.write(response_bytes(service, healthy))
                await writer.drain()
        except (asyncio.IncompleteReadError, asyncio.LimitOverrunError, TimeoutError, ConnectionError):
            pass
        finally:
            writer.close()


async def _close_all(servers: list[asyncio.Server]) -> None:
    for server in servers:
        server.close()
        await server.wait_closed()
