"""The daemon's HTTP surface (aiohttp, loopback unless told otherwise).

    GET  /healthz[?node=N]   kube-proxy's healthz: 200 or 503, {"lastUpdated","currentTime","nodeEligible"}
    GET  /livez[?node=N]     the same without node eligibility (kube-proxy's livez)
    GET  /metrics            Prometheus text: kubeproxy_* series and the DNS server's coredns_* series
    GET  /rules?node=N       the rules programmed in node N's namespace right now, as the kernel reports them
    GET  /state              every object the daemon serves, as manifests (JSON)
    POST /apply, /delete     manifest text in the body; 400 with one error per line and nothing changed

The handlers know nothing of stores, labs or proxies: they talk to a `DaemonControl`, which the daemon
implements, so the HTTP layer is tested on its own and the wiring stays in one place.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Protocol

from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST

from kubeplane.daemon.health import HealthBoard, HealthStatus, UnknownNode
from kubeplane.daemon.metrics import ProxyMetrics
from kubeplane.model.errors import ManifestErrors

log = logging.getLogger(__name__)

DEFAULT_HOST = "127.0.0.1"
MAX_MANIFEST_BYTES = 64 * 1024 * 1024


class ChangesNotAccepted(RuntimeError):
    """This daemon does not take objects over HTTP (its source is an API server): answered with 405."""


@dataclass(frozen=True)
class ChangeOutcome:
    """What an apply or delete did: the store version after it, and one `Kind key action` line per object."""

    version: int
    changes: tuple[str, ...]

    def to_json(self) -> dict[str, Any]:
        return {"version": self.version, "changes": list(self.changes)}


class DaemonControl(Protocol):
    """What the HTTP layer needs from a running daemon."""

    @property
    def health(self) -> HealthBoard: ...

    @property
    def metrics(self) -> ProxyMetrics: ...

    async def rules(self, node: str) -> str:
        """The programmed rules of `node` (raises UnknownNode)."""
        ...

    def state(self) -> Mapping[str, Any]: ...

    async def apply(self, manifest_text: str, source_name: str) -> ChangeOutcome:
        """Validate and merge objects (raises ManifestErrors, changing nothing)."""
        ...

    async def delete(self, manifest_text: str, source_name: str) -> ChangeOutcome:
        """Validate and remove objects (raises ManifestErrors, changing nothing)."""
        ...


CONTROL_KEY = web.AppKey("control", DaemonControl)


def _control(request: web.Request) -> DaemonControl:
    return request.app[CONTROL_KEY]


def _probe_response(status: HealthStatus, body: Mapping[str, object]) -> web.Response:
    response = web.Response(
        text=json.dumps(body, separators=(",", ": ")),
        status=200 if status.healthy else 503,
        content_type="application/json",
    )
    response.headers["X-Content-Type-Options"] = "nosniff"
    return response


async def _probe(request: web.Request, liveness: bool) -> web.Response:
    control = _control(request)
    try:
        status = control.health.status(request.query.get("node"), liveness=liveness)
    except UnknownNode as err:
        raise web.HTTPNotFound(text=f"no proxy for node {err.args[0]!r}\n") from None
    response = _probe_response(status, status.livez_body() if liveness else status.healthz_body())
    control.metrics.probed(liveness, response.status)
    return response


async def healthz(request: web.Request) -> web.Response:
    return await _probe(request, liveness=False)


async def livez(request: web.Request) -> web.Response:
    return await _probe(request, liveness=True)


async def metrics(request: web.Request) -> web.Response:
    body = _control(request).metrics.render()
    return web.Response(body=body, headers={"Content-Type": CONTENT_TYPE_LATEST})


async def rules(request: web.Request) -> web.Response:
    node = request.query.get("node")
    if not node:
        raise web.HTTPBadRequest(text="missing query parameter: node\n")
    try:
        text = await _control(request).rules(node)
    except UnknownNode:
        raise web.HTTPNotFound(text=f"no proxy for node {node!r}\n") from None
    return web.Response(text=text, content_type="text/plain")


async def state(request: web.Request) -> web.Response:
    return web.json_response(dict(_control(request).state()))


async def _change(request: web.Request, deleting: bool) -> web.Response:
    control = _control(request)
    text = await request.text()
    source_name = request.query.get("source") or ("delete" if deleting else "apply")
    try:
        outcome = await (control.delete if deleting else control.apply)(text, source_name)
    except ManifestErrors as err:
        log.info("api %s rejected source=%s errors=%d", request.path, source_name, len(err.errors))
        return web.Response(text=str(err) + "\n", status=400, content_type="text/plain")
    except ChangesNotAccepted as err:
        raise web.HTTPMethodNotAllowed(request.method, ["GET"], text=f"{err}\n") from None
    log.info("api %s accepted source=%s changes=%d", request.path, source_name, len(outcome.changes))
    return web.json_response(outcome.to_json())


async def apply(request: web.Request) -> web.Response:
    return await _change(request, deleting=False)


async def delete(request: web.Request) -> web.Response:
    return await _change(request, deleting=True)


def build_app(control: DaemonControl) -> web.Application:
    app = web.Application(client_max_size=MAX_MANIFEST_BYTES)
    app[CONTROL_KEY] = control
    app.router.add_get("/healthz", healthz)
    app.router.add_get("/livez", livez)
    app.router.add_get("/metrics", metrics)
    app.router.add_get("/rules", rules)
    app.router.add_get("/state", state)
    app.router.add_post("/apply", apply)
    app.router.add_post("/delete", delete)
    return app


class HttpServer:
    """The app served on host:port (port 0: any free one); `port` is the one actually bound."""

    def __init__(self, control: DaemonControl, host: str = DEFAULT_HOST, port: int = 0) -> None:
        self._runner = web.AppRunner(build_app(control), handle_signals=False, access_log=None)
        self.host = host
        self.port = port

    async def start(self) -> None:
        await self._runner.setup()
        site = web.TCPSite(self._runner, self.host, self.port)
        await site.start()
        self.port = int(self._runner.addresses[0][1])
        log.info("http listening address=%s:%d", self.host, self.port)

    async def stop(self) -> None:
        await self._runner.cleanup()
