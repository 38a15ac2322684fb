"""What the daemon serves: the manifest files' objects, overlaid with objects applied or deleted via its API.

Two writers change one cluster: the files under the watched path and `kubeplane apply/delete`. The rule is
"last writer wins, per object": an applied object replaces the file's version of it, a deleted one hides it,
until the file's own version of that object changes (someone edited it after the apply), which makes the
file win again. Every change is all-or-nothing: the merged object set is completed into a `Cluster` first
(API defaulting, allocation, endpoints); if that raises `ManifestErrors`, nothing is kept and the store is
untouched.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass

from kubeplane.endpoints import CONTROLLER_NAME, MANAGED_BY_LABEL
from kubeplane.model.errors import ErrorPlace, ManifestError, ManifestErrors
from kubeplane.model.objects import Cluster, EndpointSlice, KubeObject
from kubeplane.store import ChangeSet, ClusterStore, objects_by_kind

log = logging.getLogger(__name__)

ClusterBuilder = Callable[[Sequence[KubeObject]], Cluster]
ObjectId = tuple[str, str]  # (kind, namespace/name)


def object_id(obj: KubeObject) -> ObjectId:
    return type(obj).__name__, obj.meta.key


@dataclass(frozen=True)
class Override:
    """An API write over one object: `obj` None deletes; `file_version` is the file's copy at that time."""

    obj: KubeObject | None
    file_version: KubeObject | None


class DesiredState:
    """File objects plus API overrides, published to the store as one completed `Cluster`."""

    def __init__(self, store: ClusterStore, build: ClusterBuilder) -> None:
        self._store = store
        self._build = build
        self._file_objects: dict[ObjectId, KubeObject] = {}
        self._overrides: dict[ObjectId, Override] = {}

    @property
    def store(self) -> ClusterStore:
        return self._store

    def objects(self) -> tuple[KubeObject, ...]:
        """The merged object set, files first in their order, then objects that only the API added."""
        return _merge(self._file_objects, self._overrides)

    def set_files(self, objects: Iterable[KubeObject]) -> ChangeSet:
        """The files were (re)read: their objects replace the previous file objects.

        An override survives only while the file still holds the version of the object it overrode."""
        file_objects = {object_id(obj): obj for obj in objects}
        overrides = {
            oid: override
            for oid, override in self._overrides.items()
            if file_objects.get(oid) == override.file_version
        }
        return self._commit(file_objects, overrides)

    def refresh(self) -> ChangeSet:
        """Rebuild from the same objects: for a builder that reads outside state (the lab's readiness)."""
        return self._commit(self._file_objects, self._overrides)

    def apply(self, objects: Iterable[KubeObject]) -> ChangeSet:
        overrides = dict(self._overrides)
        for obj in objects:
            oid = object_id(obj)
            overrides[oid] = Override(obj, self._file_objects.get(oid))
        return self._commit(self._file_objects, overrides)

    def delete(self, objects: Iterable[KubeObject]) -> ChangeSet:
        """Remove objects by kind and key; an object that is not served makes the whole delete fail."""
        current = {object_id(obj) for obj in self.objects()}
        overrides = dict(self._overrides)
        missing: list[ManifestError] = []
        for obj in objects:
            oid = object_id(obj)
            if oid not in current:
                place = ErrorPlace.of(obj.meta.source, kind=oid[0], key=oid[1])
                missing.append(ManifestError(place, "", "not found"))
                continue
            overrides[oid] = Override(None, self._file_objects.get(oid))
        if missing:
            raise ManifestErrors(missing)
        return self._commit(self._file_objects, overrides)

    def _commit(
        self, file_objects: dict[ObjectId, KubeObject], overrides: dict[ObjectId, Override]
    ) -> ChangeSet:
        cluster = self._build(_merge(file_objects, overrides))
        self._file_objects, self._overrides = file_objects, overrides
        return self._store.replace(cluster)


def _merge(
    file_objects: dict[ObjectId, KubeObject], overrides: dict[ObjectId, Override]
) -> tuple[KubeObject, ...]:
    merged: list[KubeObject] = []
    for oid, obj in file_objects.items():
        override = overrides.get(oid)
        if override is None:
            merged.append(obj)
        elif override.obj is not None:
            merged.append(override.obj)
    merged.extend(o.obj for oid, o in overrides.items() if oid not in file_objects and o.obj is not None)
    return tuple(merged)


def declared_objects(cluster: Cluster) -> tuple[KubeObject, ...]:
    """A completed snapshot's objects minus the controller's EndpointSlices (they are derived again)."""
    return tuple(
        obj
        for objects in objects_by_kind(cluster).values()
        for obj in objects.values()
        if not (isinstance(obj, EndpointSlice) and obj.meta.labels.get(MANAGED_BY_LABEL) == CONTROLLER_NAME)
    )


class ManifestSink:
    """Stands where the manifest source expects the store: its accepted snapshots become the file objects.

    `replace` never raises: when the files' new objects do not fit with the API's overrides, the errors are
    logged and kept in `errors`, and the previous state stays served (bad input never costs the last good
    state)."""

    def __init__(self, desired: DesiredState) -> None:
        self._desired = desired
        self._cluster = Cluster()
        self.errors: tuple[ManifestError, ...] = ()

    @property
    def cluster(self) -> Cluster:
        return self._cluster

    @property
    def version(self) -> int:
        return self._desired.store.version

    def replace(self, cluster: Cluster) -> ChangeSet:
        store = self._desired.store
        if cluster is self._cluster:
            return ChangeSet(store.version, store.version, store.cluster, store.cluster)
        try:
            change_set = self._desired.set_files(declared_objects(cluster))
        except ManifestErrors as problem:
            for error in problem.errors:
                log.warning("manifests conflict with applied objects: %s", error)
            self.errors = problem.errors
            return ChangeSet(store.version, store.version, store.cluster, store.cluster)
        self._cluster, self.errors = cluster, ()
        return change_set
