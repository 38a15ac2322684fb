"""A real Kubernetes API server as a source: list+watch like client-go's reflector, with aiohttp.

Per resource (Services, EndpointSlices, Nodes, Namespaces, Pods) a `Reflector` lists every object (in pages),
remembers the list's resourceVersion, then watches from it with bookmarks allowed. Watch events update a cache
of parsed objects; a clean end of the stream (the server's timeoutSeconds) or a dropped connection resumes
the watch from the last resourceVersion seen (an event's or a bookmark's), so nothing is relisted needlessly.
Only "410 Gone" (the server compacted past our resourceVersion, sent as an HTTP status or as an ERROR event)
forces a full relist, which replaces the cache and so also forgets objects deleted while we were away. Other
failures back off exponentially (client-go's 800 ms doubling to 30 s, with jitter) and retry.

`KubernetesSource` runs one reflector per resource and, once every resource has listed, hands the full set of
objects to its `publish` callback after each burst of changes (coalesced, so a relist of 10k pods publishes
once). JSON is converted with the model's parser, object by object: an object the parser refuses is logged and
its last good version kept, it never stops the source.
"""

from __future__ import annotations

import asyncio
import json
import logging
import random
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, TypeVar

import aiohttp

from kubeplane.model.objects import (
    Cluster,
    EndpointSlice,
    KubeObject,
    KubeProxyConfiguration,
    Namespace,
    Node,
    Pod,
    Service,
    ServiceCIDR,
)
from kubeplane.model.parse import parse_object
from kubeplane.sources.kubeconfig import ApiCredentials
from kubeplane.store import ClusterStore

log = logging.getLogger(__name__)

T = TypeVar("T")
ObjectParser = Callable[[Mapping[str, Any]], KubeObject]
Publisher = Callable[[tuple[KubeObject, ...]], None]


@dataclass(frozen=True)
class WatchedResource:
    """One collection to list and watch: its kind (as the parser expects it) and its collection path."""

    kind: str
    api_version: str
    path: str
    field_selector: str | None = None


CORE_RESOURCES = (
    WatchedResource("Namespace", "v1", "/api/v1/namespaces"),
    WatchedResource("Node", "v1", "/api/v1/nodes"),
    WatchedResource("Service", "v1", "/api/v1/services"),
    WatchedResource("EndpointSlice", "discovery.k8s.io/v1", "/apis/discovery.k8s.io/v1/endpointslices"),
    WatchedResource("Pod", "v1", "/api/v1/pods"),
)


class ApiError(RuntimeError):
    """The API server answered with an error status (other than 410, which means relist)."""


class ResourceExpired(RuntimeError):
    """410 Gone: our resourceVersion was compacted away; only a fresh list can continue."""


class Backoff:
    """Exponential backoff with jitter: initial, doubling, capped; `reset` after a healthy stretch."""

    def __init__(self, initial: float = 0.8, cap: float = 30.0, jitter: float = 1.0) -> None:
        self.initial, self.cap, self.jitter = initial, cap, jitter
        self._current = initial

    def next_delay(self) -> float:
        delay = self._current * (1.0 + random.random() * self.jitter)
        self._current = min(self.cap, self._current * 2)
        return min(delay, self.cap)

    def reset(self) -> None:
        self._current = self.initial


def object_key(obj: Mapping[str, Any]) -> str:
    metadata = obj.get("metadata") or {}
    namespace, name = metadata.get("namespace") or "", metadata.get("name") or ""
    return f"{namespace}/{name}" if namespace else name


def _resource_version(obj: Mapping[str, Any]) -> str:
    return str((obj.get("metadata") or {}).get("resourceVersion") or "")


class Reflector:
    """List+watch one resource into `objects` (key -> parsed object); calls `on_change` after each change."""

    def __init__(
        self,
        session: aiohttp.ClientSession,
        credentials: ApiCredentials,
        resource: WatchedResource,
        parse: ObjectParser,
        on_change: Callable[[], None],
        page_size: int = 500,
        watch_timeout_seconds: int = 300,
        backoff: Backoff | None = None,
    ) -> None:
        self.resource = resource
        self.objects: dict[str, KubeObject] = {}
        self.resource_version = ""
        self.synced = asyncio.Event()
        self._session = session
        self._credentials = credentials
        self._parse = parse
        self._on_change = on_change
        self._page_size = page_size
        self._watch_timeout = watch_timeout_seconds
        self._backoff = backoff or Backoff()
        self._ssl = credentials.ssl_context()

    async def run(self) -> None:
        """Forever: list when needed, watch, recover; cancellation is the only way out."""
        need_list = True
        while True:
            try:
                if need_list:
                    await self._list()
                    need_list = False
                await self._watch()
                self._backoff.reset()
            except ResourceExpired:
                log.info("watch expired, relisting kind=%s rv=%s", self.resource.kind, self.resource_version)
                if need_list:  # the list itself expired (a stale continue token): do not spin
                    await asyncio.sleep(self._backoff.next_delay())
                need_list = True
            except (aiohttp.ClientError, ApiError, TimeoutError, ValueError) as err:
                delay = self._backoff.next_delay()
                kind, reason = self.resource.kind, str(err) or type(err).__name__
                log.warning("list/watch failed kind=%s error=%s retry_in=%.2fs", kind, reason, delay)
                await asyncio.sleep(delay)

    def _params(self, **extra: str) -> dict[str, str]:
        params = dict(extra)
        if self.resource.field_selector:
            params["fieldSelector"] = self.resource.field_selector
        return params

    async def _get(self, params: Mapping[str, str], timeout: aiohttp.ClientTimeout) -> aiohttp.ClientResponse:
        response = await self._session.get(
            self._credentials.server + self.resource.path,
            params=params,
            headers=self._credentials.headers(),
            ssl=self._ssl if self._ssl is not None else True,
            server_hostname=self._credentials.tls_server_name,
            timeout=timeout,
        )
        if response.status == 410:
            response.release()
            raise ResourceExpired(self.resource.path)
        if response.status != 200:
            body = (await response.text())[:200]
            response.release()
            raise ApiError(f"GET {self.resource.path}: HTTP {response.status}: {body}")
        return response

    async def _list(self) -> None:
        """All pages, then replace the cache in one step (so deletions missed while away disappear)."""
        fresh: dict[str, KubeObject] = {}
        continue_token = ""
        timeout = aiohttp.ClientTimeout(total=60)
        while True:
            params = self._params(limit=str(self._page_size))
            if continue_token:
                params["continue"] = continue_token
            response = await self._get(params, timeout)
            async with response:
                page = await response.json(content_type=None)
            for item in page.get("items") or ():
                item = {"apiVersion": self.resource.api_version, "kind": self.resource.kind, **item}
                parsed = self._parse_or_keep(item, self.objects.get(object_key(item)))
                if parsed is not None:
                    fresh[object_key(item)] = parsed
            metadata = page.get("metadata") or {}
            continue_token = metadata.get("continue") or ""
            if not continue_token:
                self.resource_version = str(metadata.get("resourceVersion") or "")
                break
        self.objects = fresh
        self.synced.set()
        self._on_change()

    async def _watch(self) -> None:
        """One watch request, to the end of its stream; events apply as they arrive."""
        params = self._params(
            watch="true",
            resourceVersion=self.resource_version,
            allowWatchBookmarks="true",
            timeoutSeconds=str(self._watch_timeout),
        )
        # The server ends the stream after timeoutSeconds; silence beyond that (plus slack) is a dead link.
        timeout = aiohttp.ClientTimeout(total=None, sock_connect=30, sock_read=self._watch_timeout + 30)
        response = await self._get(params, timeout)
        async with response:
            # Split lines by hand: aiohttp's line iterator caps a line at 128 KiB; an object can be bigger.
            pending = b""
            async for chunk in response.content.iter_any():
                pending += chunk
                while b"\n" in pending:
                    line, pending = pending.split(b"\n", 1)
                    if line.strip():
                        self._apply_event(json.loads(line))
        if pending.strip():
            log.info("watch stream cut mid-event kind=%s rv=%s", self.resource.kind, self.resource_version)

    def _apply_event(self, event: Mapping[str, Any]) -> None:
        event_type, obj = event.get("type"), event.get("object") or {}
        if event_type == "ERROR":
            if obj.get("code") == 410:
                raise ResourceExpired(str(obj.get("message", "")))
            raise ApiError(f"watch {self.resource.path}: {obj.get('code')} {obj.get('message', '')}")
        version = _resource_version(obj)
        if event_type == "BOOKMARK":
            self.resource_version = version or self.resource_version
            return
        key = object_key(obj)
        if event_type in ("ADDED", "MODIFIED"):
            obj = {"apiVersion": self.resource.api_version, "kind": self.resource.kind, **obj}
            parsed = self._parse_or_keep(obj, self.objects.get(key))
            if parsed is not None:
                self.objects[key] = parsed
        elif event_type == "DELETED":
            self.objects.pop(key, None)
        else:
            raise ApiError(f"watch {self.resource.path}: unknown event type {event_type!r}")
        self.resource_version = version or self.resource_version
        self._on_change()

    def _parse_or_keep(self, obj: Mapping[str, Any], previous: KubeObject | None) -> KubeObject | None:
        try:
            return self._parse(obj)
        except Exception as err:  # whatever the parser raises must not stop the watch
            log.warning(
                "object not understood, keeping last good kind=%s key=%s error=%s",
                self.resource.kind,
                object_key(obj),
                err,
            )
            return previous


def _api_parser(url: str) -> ObjectParser:
    """The model's parser, with errors naming the collection URL the object came from."""

    def parse(body: Mapping[str, Any]) -> KubeObject:
        return parse_object(body, file=url)

    return parse


class KubernetesSource:
    """Every watched resource of one API server, published as one tuple of objects after each change burst."""

    def __init__(
        self,
        credentials: ApiCredentials,
        publish: Publisher,
        resources: Sequence[WatchedResource] = CORE_RESOURCES,
        parse: ObjectParser | None = None,
        coalesce_seconds: float = 0.01,
        page_size: int = 500,
        watch_timeout_seconds: int = 300,
        backoff_factory: Callable[[], Backoff] = Backoff,
    ) -> None:
        self._credentials = credentials
        self._parse = parse
        self._publish = publish
        self._resources = tuple(resources)
        self._coalesce_seconds = coalesce_seconds
        self._page_size = page_size
        self._watch_timeout = watch_timeout_seconds
        self._backoff_factory = backoff_factory
        self._changed = asyncio.Event()
        self.reflectors: list[Reflector] = []

    def objects(self) -> tuple[KubeObject, ...]:
        return tuple(obj for reflector in self.reflectors for obj in reflector.objects.values())

    async def run(self) -> None:
        """List+watch until cancelled; publish first when all resources have listed."""
        async with aiohttp.ClientSession() as session:
            self.reflectors = [
                Reflector(
                    session,
                    self._credentials,
                    resource,
                    self._parse or _api_parser(self._credentials.server + resource.path),
                    self._changed.set,
                    page_size=self._page_size,
                    watch_timeout_seconds=self._watch_timeout,
                    backoff=self._backoff_factory(),
                )
                for resource in self._resources
            ]
            tasks = [
                asyncio.create_task(r.run(), name=f"reflector-{r.resource.kind}") for r in self.reflectors
            ]
            try:
                await asyncio.gather(*(r.synced.wait() for r in self.reflectors))
                while True:
                    await self._changed.wait()
                    await asyncio.sleep(self._coalesce_seconds)
                    self._changed.clear()
                    self._publish(self.objects())
            finally:
                for task in tasks:
                    task.cancel()
                await asyncio.gather(*tasks, return_exceptions=True)


def assemble_cluster(
    objects: Sequence[KubeObject], proxy_config: KubeProxyConfiguration | None = None
) -> Cluster:
    """A snapshot of objects read from an API server, as they are: the server has already defaulted and
    allocated them and its controllers publish the EndpointSlices, so nothing is completed or derived here."""
    by_type: dict[type, list[KubeObject]] = {}
    for obj in objects:
        by_type.setdefault(type(obj), []).append(obj)

    def of(kind: type[T]) -> tuple[T, ...]:
        return tuple(sorted((o for o in by_type.get(kind, ()) if isinstance(o, kind)), key=_sort_key))

    return Cluster(
        services=of(Service),
        endpoint_slices=of(EndpointSlice),
        pods=of(Pod),
        nodes=of(Node),
        namespaces=of(Namespace),
        service_cidrs=of(ServiceCIDR),
        proxy_config=proxy_config or KubeProxyConfiguration(),
    )


def store_publisher(store: ClusterStore) -> Publisher:
    """A Publisher that hands each published set of objects to `store` as one snapshot."""

    def publish(objects: tuple[KubeObject, ...]) -> None:
        store.replace(assemble_cluster(objects))

    return publish


def _sort_key(obj: KubeObject) -> str:
    return obj.meta.key
