"""The daemon's answers to its HTTP API: health, metrics, programmed rules, state, apply and delete.

This is the one implementation of `http.DaemonControl`. Parsing, serialising and reading rules are passed in
(the model's parser and serializer, a reader that asks the kernel), so the same class serves `kubeplane up`
and the tests, and the HTTP layer stays free of any knowledge of the lab.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Mapping, Sequence
from typing import Any

from kubeplane.daemon.desired import DesiredState
from kubeplane.daemon.health import HealthBoard, UnknownNode
from kubeplane.daemon.http import ChangeOutcome
from kubeplane.daemon.metrics import ProxyMetrics
from kubeplane.model.objects import KubeObject
from kubeplane.netns.run import run_in_netns_async
from kubeplane.store import ChangeSet, ClusterStore, ObjectChange, objects_by_kind

TextParser = Callable[[str, str], Sequence[KubeObject]]
Serializer = Callable[[KubeObject], Mapping[str, Any]]


def list_manifest(store: ClusterStore, serialize: Serializer) -> Mapping[str, Any]:
    """The store's snapshot as a `kind: List` of manifests at the store's version, as `/state` serves it."""
    items = [
        dict(serialize(obj))
        for objects in objects_by_kind(store.cluster).values()
        for obj in objects.values()
    ]
    return {
        "apiVersion": "v1",
        "kind": "List",
        "metadata": {"resourceVersion": str(store.version)},
        "items": items,
    }


RulesReader = Callable[[str], Awaitable[str]]


def describe_change(change: ObjectChange) -> str:
    return f"{change.kind} {change.key} {change.action}"


class DaemonApi:
    """Serves one daemon's state; `apply`/`delete` go through the same parser as the watched files."""

    def __init__(
        self,
        desired: DesiredState,
        health: HealthBoard,
        metrics: ProxyMetrics,
        parse_text: TextParser,
        serialize: Serializer,
        read_rules: RulesReader,
        node_names: Callable[[], Sequence[str]],
    ) -> None:
        self._desired = desired
        self._health = health
        self._metrics = metrics
        self._parse_text = parse_text
        self._serialize = serialize
        self._read_rules = read_rules
        self._node_names = node_names
        self._write_lock = asyncio.Lock()

    @property
    def health(self) -> HealthBoard:
        return self._health

    @property
    def metrics(self) -> ProxyMetrics:
        return self._metrics

    async def rules(self, node: str) -> str:
        if node not in self._node_names():
            raise UnknownNode(node)
        return await self._read_rules(node)

    def state(self) -> Mapping[str, Any]:
        """Every served object (derived EndpointSlices included) as a `kind: List` of manifests."""
        return list_manifest(self._desired.store, self._serialize)

    async def apply(self, manifest_text: str, source_name: str) -> ChangeOutcome:
        objects = self._parse_text(manifest_text, source_name)
        async with self._write_lock:
            return self._outcome(self._desired.apply(objects))

    async def delete(self, manifest_text: str, source_name: str) -> ChangeOutcome:
        objects = self._parse_text(manifest_text, source_name)
        async with self._write_lock:
            return self._outcome(self._desired.delete(objects))

    def _outcome(self, change_set: ChangeSet) -> ChangeOutcome:
        return ChangeOutcome(
            version=self._desired.store.version, changes=tuple(describe_change(c) for c in change_set.changes)
        )


def iptables_rules_reader(netns_of: Callable[[str], str | None], ipvs: bool = False) -> RulesReader:
    """Read what the kernel holds in a node's namespace: `iptables-save` (and `ipvsadm -Ln` in IPVS mode)."""

    async def read(node: str) -> str:
        netns = netns_of(node)
        text = await run_in_netns_async(netns, ["iptables-save"])
        if ipvs:
            text += "\n" + await run_in_netns_async(netns, ["ipvsadm-save", "-n"])
        return text

    return read
