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
from dataclasses import dataclass

from kubeplane.model.objects import IPFamily
from kubeplane.netns.nsfs import open_socket_in_netns
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


def health_check_services(plan: NodePlan, family: IPFamily = "IPv4") -> tuple[HealthCheckService, ...]:
    """One entry per service with a healthCheckNodePort; local endpoints are this node's ready ones."""
    found: dict[str, HealthCheckService] = {}
    local_ips: dict[str, set[str]] = {}
    for sp in plan.ports_for(family):
        if not sp.health_check_node_port:
            continue
        ips = local_ips.setdefault(sp.service_key, set())
        ips.update(ep.ip for ep in sp.endpoints if ep.is_local and ep.ready)
        found[sp.service_key] = HealthCheckService(sp.namespace, sp.name, sp.health_check_node_port, len(ips))
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
    """The health check listeners of one node; `update` opens, closes and refreshes them from a plan."""

    def __init__(self, netns: str | None, address: str = "0.0.0.0") -> None:
        self.netns = netns
        self.address = address
        self.proxy_healthy = True
        self._services: dict[int, HealthCheckService] = {}
        self._servers: dict[int, asyncio.Server] = {}

    @property
    def ports(self) -> tuple[int, ...]:
        return tuple(sorted(self._servers))

    async def update(self, plan: NodePlan, proxy_healthy: bool = True) -> None:
        """Serve exactly the plan's health check ports; a port that cannot be opened is logged and retried
        at the next update, as kube-proxy does."""
        self.proxy_healthy = proxy_healthy
        wanted = {svc.port: svc for svc in health_check_services(plan)}
        for port in set(self._servers) - set(wanted):
            server = self._servers.pop(port)
            server.close()
            await server.wait_closed()
            self._services.pop(port, None)
        self._services.update(wanted)
        for port in set(wanted) - set(self._servers):
            try:
                self._servers[port] = await self._listen(port)
            except OSError as err:
                log.error("health check listen failed netns=%s port=%d error=%s", self.netns, port, err)

    async def close(self) -> None:
        for server in self._servers.values():
            server.close()
            await server.wait_closed()
        self._servers.clear()
        self._services.clear()

    async def _listen(self, port: int) -> asyncio.Server:
        if self.netns is None:
            sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            sock.bind((self.address, port))
            sock.setblocking(False)
        else:
            sock = open_socket_in_netns(self.netns, socket.AF_INET, socket.SOCK_STREAM, (self.address, port))

        async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            await self._answer(port, reader, writer)

        return await asyncio.start_server(handle, sock=sock)

    async def _answer(self, port: int, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), REQUEST_TIMEOUT_SECONDS)
            service = self._services.get(port)
            if service is not None:
                writer.write(response_bytes(service, self.proxy_healthy))
                await writer.drain()
        except (asyncio.IncompleteReadError, asyncio.LimitOverrunError, TimeoutError, ConnectionError):
            pass
        finally:
            writer.close()
