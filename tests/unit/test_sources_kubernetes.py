"""The Kubernetes API source against a local fake API server that speaks list/watch faithfully.

The fake keeps objects per collection path with a global resourceVersion, pages lists (`limit` /
`continue`), and streams watch events as chunked JSON lines from a requested resourceVersion: history first,
then live events, BOOKMARKs (only when the client allowed them), the end of the stream after
`timeoutSeconds`, a 410 ERROR event when the requested version was compacted away, and cuts mid-event to
simulate a dropped link.
"""

from __future__ import annotations

import asyncio
import contextlib
import copy
import json
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import Any

from aiohttp import web

from kubeplane.model.objects import EndpointSlice, KubeObject, Node, Pod, Service
from kubeplane.sources.kubeconfig import ApiCredentials
from kubeplane.sources.kubernetes import CORE_RESOURCES, Backoff, KubernetesSource, WatchedResource

GONE_STATUS = {
    "kind": "Status",
    "apiVersion": "v1",
    "status": "Failure",
    "message": "too old resource version",
    "reason": "Expired",
    "code": 410,
}


@dataclass
class RecordedRequest:
    path: str
    params: dict[str, str]


@dataclass
class FakeApiServer:
    token: str | None = None
    resource_version: int = 1000
    compacted_version: int = 0
    objects: dict[str, dict[str, dict[str, Any]]] = field(default_factory=dict)
    history: list[tuple[int, str, str, dict[str, Any]]] = field(default_factory=list)
    lists: list[RecordedRequest] = field(default_factory=list)
    watches: list[RecordedRequest] = field(default_factory=list)
    fail_with: list[int] = field(default_factory=list)  # HTTP statuses for the next requests, in order
    _streams: list[asyncio.Queue[tuple[str, Any]]] = field(default_factory=list)
    url: str = ""

    # --- mutations, as an API server would record them ---------------------------------------------------

    def _record(self, path: str, event_type: str, obj: dict[str, Any]) -> None:
        self.resource_version += 1
        obj = copy.deepcopy(obj)
        obj.setdefault("metadata", {})["resourceVersion"] = str(self.resource_version)
        key = _key(obj)
        if event_type == "DELETED":
            self.objects.get(path, {}).pop(key, None)
        else:
            self.objects.setdefault(path, {})[key] = obj
        self.history.append((self.resource_version, path, event_type, obj))
        for stream in self._streams:
            stream.put_nowait(("event", (path, event_type, obj)))

    def put(self, path: str, obj: dict[str, Any]) -> None:
        exists = _key(obj) in self.objects.get(path, {})
        self._record(path, "MODIFIED" if exists else "ADDED", obj)

    def delete(self, path: str, obj: dict[str, Any]) -> None:
        self._record(path, "DELETED", self.objects[path][_key(obj)])

    def bookmark(self) -> None:
        """Advance the version with a change to some other collection, then bookmark every open watch."""
        self.resource_version += 7
        for stream in self._streams:
            stream.put_nowait(("bookmark", str(self.resource_version)))

    def compact(self) -> None:
        """Forget history: any watch from an older version now gets 410 Gone."""
        self.compacted_version = self.resource_version
        self.history.clear()

    def cut_streams(self) -> None:
        """Drop every open watch connection in the middle of an event."""
        for stream in self._streams:
            stream.put_nowait(("cut", None))

    # --- HTTP ------------------------------------------------------------------------------------------

    async def handle(self, request: web.Request) -> web.StreamResponse:
        if self.token is not None and request.headers.get("Authorization") != f"Bearer {self.token}":
            return web.json_response({"kind": "Status", "code": 401, "reason": "Unauthorized"}, status=401)
        params = dict(request.query)
        if self.fail_with:
            status = self.fail_with.pop(0)
            return web.json_response({"kind": "Status", "code": status}, status=status)
        if params.get("watch") == "true":
            self.watches.append(RecordedRequest(request.path, params))
            return await self._watch(request, params)
        self.lists.append(RecordedRequest(request.path, params))
        return self._list(request.path, params)

    def _list(self, path: str, params: dict[str, str]) -> web.Response:
        items = [self.objects.get(path, {})[k] for k in sorted(self.objects.get(path, {}))]
        offset, version = 0, self.resource_version
        if params.get("continue"):
            version_text, offset_text = params["continue"].split(":")
            version, offset = int(version_text), int(offset_text)
            if version <= self.compacted_version:
                return web.json_response(GONE_STATUS, status=410)
        limit = int(params.get("limit", "0")) or len(items)
        page = items[offset : offset + limit]
        metadata: dict[str, str] = {"resourceVersion": str(version)}
        if offset + limit < len(items):
            metadata["continue"] = f"{version}:{offset + limit}"
        return web.json_response({"kind": "List", "apiVersion": "v1", "metadata": metadata, "items": page})

    async def _watch(self, request: web.Request, params: dict[str, str]) -> web.StreamResponse:
        response = web.StreamResponse(headers={"Content-Type": "application/json"})
        response.enable_chunked_encoding()
        await response.prepare(request)
        since = int(params.get("resourceVersion") or 0)
        if since < self.compacted_version:
            await _send(response, {"type": "ERROR", "object": GONE_STATUS})
            return response
        queue: asyncio.Queue[tuple[str, Any]] = asyncio.Queue()
        self._streams.append(queue)
        try:
            for version, path, event_type, obj in self.history:
                if version > since and path == request.path:
                    await _send(response, {"type": event_type, "object": obj})
            async with asyncio.timeout(float(params.get("timeoutSeconds", "30"))):
                while True:
                    what, payload = await queue.get()
                    if what == "cut":
                        await response.write(b'{"type":"ADDED","object":{"metadata":{"na')
                        assert request.transport is not None
                        request.transport.close()
                        return response
                    if what == "bookmark" and params.get("allowWatchBookmarks") == "true":
                        bookmark = {"kind": "Bookmark", "metadata": {"resourceVersion": payload}}
                        await _send(response, {"type": "BOOKMARK", "object": bookmark})
                    elif what == "event" and payload[0] == request.path:
                        await _send(response, {"type": payload[1], "object": payload[2]})
        except TimeoutError:
            pass
        finally:
            self._streams.remove(queue)
        await response.write_eof()
        return response


def _key(obj: dict[str, Any]) -> str:
    metadata = obj["metadata"]
    return f"{metadata.get('namespace', '')}/{metadata['name']}"


async def _send(response: web.StreamResponse, event: dict[str, Any]) -> None:
    await response.write(json.dumps(event).encode() + b"\n")


@asynccontextmanager
async def running(server: FakeApiServer) -> AsyncIterator[FakeApiServer]:
    """Serve on a random loopback port for the duration of the block."""
    app = web.Application()
    app.router.add_route("GET", "/{tail:.*}", server.handle)
    runner = web.AppRunner(app, handle_signals=False, handler_cancellation=True, shutdown_timeout=0.5)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = runner.addresses[0][1]
    server.url = f"http://127.0.0.1:{port}"
    try:
        yield server
    finally:
        await runner.cleanup()


# --- the source under test -------------------------------------------------------------------------------

SERVICES = "/api/v1/services"
NAMESPACES = "/api/v1/namespaces"
PODS = "/api/v1/pods"
NODES = "/api/v1/nodes"
SLICES = "/apis/discovery.k8s.io/v1/endpointslices"
TEST_RESOURCES = (
    WatchedResource("Namespace", "v1", NAMESPACES),
    WatchedResource("Service", "v1", SERVICES),
)


def _service(name: str, ip: str, namespace: str = "shop") -> dict[str, Any]:
    return {
        "metadata": {"name": name, "namespace": namespace, "uid": f"uid-{name}"},
        "spec": {"clusterIP": ip, "clusterIPs": [ip], "ports": [{"port": 80, "protocol": "TCP"}]},
    }


def _namespace(name: str) -> dict[str, Any]:
    return {"metadata": {"name": name}}


class Published:
    """Collects what the source publishes and lets a test wait for a condition on the latest snapshot."""

    def __init__(self) -> None:
        self.snapshots: list[tuple[KubeObject, ...]] = []
        self._changed = asyncio.Event()

    def __call__(self, objects: tuple[KubeObject, ...]) -> None:
        self.snapshots.append(objects)
        self._changed.set()

    def latest_keys(self) -> set[str]:
        return {f"{type(o).__name__}:{o.meta.key}" for o in (self.snapshots[-1] if self.snapshots else ())}

    async def until(self, predicate: Callable[[set[str]], bool], timeout: float = 5.0) -> None:
        async with asyncio.timeout(timeout):
            while not predicate(self.latest_keys()):
                self._changed.clear()
                await self._changed.wait()


def _fast_backoff() -> Backoff:
    return Backoff(initial=0.01, cap=0.05, jitter=0.0)


@asynccontextmanager
async def source_running(
    api: FakeApiServer, token: str | None = None, watch_timeout: int = 30
) -> AsyncIterator[tuple[KubernetesSource, Published]]:
    published = Published()
    source = KubernetesSource(
        ApiCredentials(server=api.url, token=token),
        publish=published,
        resources=TEST_RESOURCES,
        coalesce_seconds=0.005,
        page_size=2,
        watch_timeout_seconds=watch_timeout,
        backoff_factory=_fast_backoff,
    )
    task = asyncio.create_task(source.run())
    try:
        yield source, published
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task


def _has(*keys: str) -> Callable[[set[str]], bool]:
    return lambda seen: set(keys) <= seen


def _lacks(*keys: str) -> Callable[[set[str]], bool]:
    return lambda seen: not set(keys) & seen


async def test_initial_list_follows_continue_pages_then_publishes_everything() -> None:
    api = FakeApiServer()
    for i in range(5):
        api.put(SERVICES, _service(f"s{i}", f"10.96.0.{i + 1}"))
    api.put(NAMESPACES, _namespace("shop"))
    async with running(api), source_running(api) as (_, published):
        await published.until(_has(*(f"Service:shop/s{i}" for i in range(5)), "Namespace:shop"))
    service_lists = [r for r in api.lists if r.path == SERVICES]
    assert len(service_lists) == 3  # 5 services in pages of 2
    assert service_lists[1].params["continue"]


async def test_watch_applies_adds_modifications_and_deletes_from_list_version() -> None:
    api = FakeApiServer()
    api.put(SERVICES, _service("web", "10.96.0.5"))
    async with running(api), source_running(api) as (source, published):
        await published.until(_has("Service:shop/web"))
        listed_version = api.resource_version
        api.put(SERVICES, _service("api", "10.96.0.6"))
        api.put(SERVICES, _service("web", "10.96.0.7"))
        await published.until(_has("Service:shop/api"))
        api.delete(SERVICES, _service("web", ""))
        await published.until(_lacks("Service:shop/web"))
        api_service = next(o for o in source.objects() if o.meta.key == "shop/api")
        assert isinstance(api_service, Service) and api_service.cluster_ip == "10.96.0.6"
    first_watch = next(r for r in api.watches if r.path == SERVICES)
    assert first_watch.params["resourceVersion"] == str(listed_version)
    assert first_watch.params["allowWatchBookmarks"] == "true"


async def test_cut_stream_resumes_watch_from_last_seen_version_without_relisting() -> None:
    api = FakeApiServer()
    async with running(api), source_running(api) as (_, published):
        await published.until(lambda seen: True)
        api.put(SERVICES, _service("web", "10.96.0.5"))
        await published.until(_has("Service:shop/web"))
        seen_version = api.resource_version
        api.cut_streams()
        api.put(SERVICES, _service("late", "10.96.0.9"))  # happens while disconnected
        await published.until(_has("Service:shop/late"))
    service_watches = [r for r in api.watches if r.path == SERVICES]
    assert len(service_watches) >= 2
    assert service_watches[1].params["resourceVersion"] == str(seen_version)
    assert len([r for r in api.lists if r.path == SERVICES]) == 1


async def test_bookmark_moves_the_resume_version_forward() -> None:
    api = FakeApiServer()
    api.put(SERVICES, _service("web", "10.96.0.5"))
    async with running(api), source_running(api) as (source, published):
        await published.until(_has("Service:shop/web"))
        async with asyncio.timeout(5):
            while len(api._streams) < len(TEST_RESOURCES):
                await asyncio.sleep(0.01)
        api.bookmark()
        reflector = next(r for r in source.reflectors if r.resource.path == SERVICES)
        async with asyncio.timeout(5):
            while reflector.resource_version != str(api.resource_version):
                await asyncio.sleep(0.01)
        bookmarked = api.resource_version
        api.compact()  # history before the bookmark is gone: resuming from it must still work
        api.cut_streams()
        api.put(SERVICES, _service("after", "10.96.0.8"))
        await published.until(_has("Service:shop/after"))
    resumed = [r for r in api.watches if r.path == SERVICES][1]
    assert resumed.params["resourceVersion"] == str(bookmarked)
    assert len([r for r in api.lists if r.path == SERVICES]) == 1


async def test_gone_error_event_relists_and_forgets_objects_deleted_meanwhile() -> None:
    api = FakeApiServer()
    api.put(SERVICES, _service("web", "10.96.0.5"))
    api.put(SERVICES, _service("old", "10.96.0.6"))
    async with running(api), source_running(api) as (_, published):
        await published.until(_has("Service:shop/web", "Service:shop/old"))
        api.cut_streams()
        # While we are away the server deletes an object and compacts its history past our version.
        api.delete(SERVICES, _service("old", ""))
        api.put(SERVICES, _service("new", "10.96.0.7"))
        api.compact()
        await published.until(lambda seen: "Service:shop/new" in seen and "Service:shop/old" not in seen)
    assert len([r for r in api.lists if r.path == SERVICES]) >= 2


async def test_server_closing_the_watch_at_timeout_rewatches_from_same_version() -> None:
    api = FakeApiServer()
    api.put(SERVICES, _service("web", "10.96.0.5"))
    async with running(api), source_running(api, watch_timeout=1) as (_, published):
        await published.until(_has("Service:shop/web"))
        async with asyncio.timeout(5):
            while len([r for r in api.watches if r.path == SERVICES]) < 2:
                await asyncio.sleep(0.05)
    first, second = [r for r in api.watches if r.path == SERVICES][:2]
    assert first.params["resourceVersion"] == second.params["resourceVersion"]
    assert first.params["timeoutSeconds"] == "1"


async def test_errors_back_off_and_retry_until_the_server_answers() -> None:
    api = FakeApiServer(fail_with=[500, 503, 500])
    api.put(NAMESPACES, _namespace("shop"))
    async with running(api), source_running(api) as (_, published):
        await published.until(_has("Namespace:shop"))
    assert not api.fail_with


async def test_bearer_token_is_sent_and_wrong_token_never_publishes() -> None:
    api = FakeApiServer(token="s3cret")
    api.put(NAMESPACES, _namespace("shop"))
    async with running(api):
        async with source_running(api, token="wrong") as (_, published):
            await asyncio.sleep(0.2)
            assert published.snapshots == []
        async with source_running(api, token="s3cret") as (_, published):
            await published.until(_has("Namespace:shop"))


async def test_object_the_parser_refuses_keeps_its_last_good_version() -> None:
    api = FakeApiServer()
    api.put(SERVICES, _service("web", "10.96.0.5"))
    async with running(api), source_running(api) as (source, published):
        await published.until(_has("Service:shop/web"))
        broken = _service("web", "10.96.0.5")
        broken["spec"]["ports"] = [{"port": "not-a-number"}]
        api.put(SERVICES, broken)
        api.put(SERVICES, _service("api", "10.96.0.6"))
        await published.until(_has("Service:shop/api"))
        web = next(o for o in source.objects() if o.meta.key == "shop/web")
        assert isinstance(web, Service) and web.ports[0].port == 80


# Objects as a kind cluster's API server returns them: server metadata, status, fields kubeplane ignores.
REAL_NODE = {
    "metadata": {
        "name": "kind-worker",
        "uid": "3c1d",
        "resourceVersion": "9",
        "labels": {"kubernetes.io/hostname": "kind-worker", "topology.kubernetes.io/zone": "z1"},
        "annotations": {"node.alpha.kubernetes.io/ttl": "0"},
    },
    "spec": {"podCIDR": "10.244.1.0/24", "podCIDRs": ["10.244.1.0/24"], "providerID": "kind://docker/k/w"},
    "status": {
        "capacity": {"cpu": "8"},
        "conditions": [{"type": "Ready", "status": "True", "reason": "KubeletReady"}],
        "addresses": [{"type": "InternalIP", "address": "172.18.0.3"}, {"type": "Hostname", "address": "w"}],
        "nodeInfo": {"kernelVersion": "6.1.0"},
    },
}
REAL_POD = {
    "metadata": {
        "name": "coredns-5d78c9869d-abcde",
        "generateName": "coredns-5d78c9869d-",
        "namespace": "kube-system",
        "uid": "p1",
        "labels": {"k8s-app": "kube-dns", "pod-template-hash": "5d78c9869d"},
        "ownerReferences": [{"apiVersion": "apps/v1", "kind": "ReplicaSet", "name": "coredns", "uid": "r"}],
    },
    "spec": {
        "containers": [
            {
                "name": "coredns",
                "image": "registry.k8s.io/coredns/coredns:v1.11.1",
                "ports": [
                    {"name": "dns", "containerPort": 53, "protocol": "UDP"},
                    {"name": "dns-tcp", "containerPort": 53, "protocol": "TCP"},
                ],
                "resources": {"limits": {"memory": "170Mi"}},
            }
        ],
        "nodeName": "kind-worker",
        "restartPolicy": "Always",
        "tolerations": [{"key": "CriticalAddonsOnly", "operator": "Exists"}],
    },
    "status": {
        "phase": "Running",
        "conditions": [{"type": "Ready", "status": "True", "lastProbeTime": None}],
        "podIP": "10.244.1.3",
        "podIPs": [{"ip": "10.244.1.3"}],
        "qosClass": "Burstable",
    },
}
REAL_SLICE = {
    "metadata": {
        "name": "kube-dns-x7k2p",
        "generateName": "kube-dns-",
        "namespace": "kube-system",
        "generation": 3,
        "labels": {
            "endpointslice.kubernetes.io/managed-by": "endpointslice-controller.k8s.io",
            "kubernetes.io/service-name": "kube-dns",
        },
        "annotations": {"endpoints.kubernetes.io/last-change-trigger-time": "2024-01-01T00:00:00Z"},
    },
    "addressType": "IPv4",
    "endpoints": [
        {
            "addresses": ["10.244.1.3"],
            "conditions": {"ready": True, "serving": True, "terminating": False},
            "nodeName": "kind-worker",
            "targetRef": {"kind": "Pod", "namespace": "kube-system", "name": "coredns-5d78c9869d-abcde"},
        }
    ],
    "ports": [{"name": "dns", "protocol": "UDP", "port": 53}],
}


async def test_objects_as_a_real_api_server_returns_them_are_understood() -> None:
    api = FakeApiServer()
    api.put(NODES, REAL_NODE)
    api.put(PODS, REAL_POD)
    api.put(SLICES, REAL_SLICE)
    published = Published()
    async with running(api):
        source = KubernetesSource(
            ApiCredentials(server=api.url),
            publish=published,
            resources=[r for r in CORE_RESOURCES if r.kind in ("Node", "Pod", "EndpointSlice")],
            coalesce_seconds=0.005,
        )
        task = asyncio.create_task(source.run())
        try:
            await published.until(_has("Node:kind-worker", "Pod:kube-system/coredns-5d78c9869d-abcde"))
        finally:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
    by_kind = {type(o).__name__: o for o in source.objects()}
    node, pod, endpoint_slice = by_kind["Node"], by_kind["Pod"], by_kind["EndpointSlice"]
    assert isinstance(node, Node) and node.internal_ips == ("172.18.0.3",) and node.zone == "z1"
    assert isinstance(pod, Pod) and pod.pod_ips == ("10.244.1.3",) and pod.ready is True
    assert isinstance(endpoint_slice, EndpointSlice) and endpoint_slice.service_name == "kube-dns"
