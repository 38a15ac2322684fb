"""Manifest files as a source: load them once, or watch them and feed every good snapshot to the store.

Bad input must never cost the last good state, at two levels:

- per file: a file that fails to parse or validate keeps contributing the objects it had when it last parsed
  cleanly (none, if it never did); its errors are logged once and listed in `ManifestSource.errors` until the
  file is fixed or removed;
- across files: when the files parse but do not fit together (`build_cluster` refuses, e.g. a duplicate object
  or a nodePort clash between two files), the store keeps its previous snapshot and the errors are listed.

Watching polls the paths every `poll_interval` (100 ms) and compares each manifest file's (inode, size,
mtime, ctime). For the small trees kubeplane serves this costs microseconds, needs no dependency, and behaves
the same on every filesystem (inotify misses changes on bind mounts and network filesystems, and watchfiles
would only replace a dozen lines of stat calls). A burst of writes (an editor's save, a `cp -r`) is debounced:
the source waits until the tree has been quiet for `quiet_period` (capped at `max_delay`) before re-reading.
Only files whose signature changed are parsed again.

Each accepted snapshot goes through the caller's `transform` (the lab marks Pod readiness there) and then the
EndpointSlice controller, so derived slices always reflect the transformed Pods.
"""

from __future__ import annotations

import asyncio
import logging
import os
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

from kubeplane.endpoints import with_derived_endpoint_slices
from kubeplane.model.complete import build_cluster
from kubeplane.model.complete_services import FamilyMemo
from kubeplane.model.errors import ManifestError, ManifestErrors
from kubeplane.model.objects import Cluster, KubeObject
from kubeplane.model.parse import find_manifest_files, parse_file
from kubeplane.store import ChangeSet

log = logging.getLogger(__name__)

ClusterTransform = Callable[[Cluster], Cluster]

DEFAULT_POLL_INTERVAL = 0.1
DEFAULT_QUIET_PERIOD = 0.15
DEFAULT_MAX_DELAY = 2.0


class SnapshotSink(Protocol):
    """Where accepted snapshots go: a `ClusterStore`, or the daemon's `ManifestSink`, which merges them with
    objects applied through its API before they reach the store."""

    @property
    def cluster(self) -> Cluster:
        """The snapshot last accepted (what `refresh` and a refused load fall back to)."""
        ...

    @property
    def version(self) -> int: ...

    def replace(self, cluster: Cluster) -> ChangeSet: ...


@dataclass(frozen=True)
class FileSignature:
    """What changes when a file is written or replaced; equal signatures mean the file need not be re-read."""

    inode: int
    size: int
    mtime_ns: int
    ctime_ns: int

    @classmethod
    def of(cls, path: Path) -> FileSignature | None:
        try:
            stat = os.stat(path)
        except OSError:
            return None
        return cls(stat.st_ino, stat.st_size, stat.st_mtime_ns, stat.st_ctime_ns)


@dataclass(frozen=True)
class FileState:
    """One manifest file as last read: the objects it last parsed cleanly with, and its current errors."""

    signature: FileSignature | None
    good_objects: tuple[KubeObject, ...]
    errors: tuple[ManifestError, ...] = ()


@dataclass(frozen=True)
class TreeListing:
    """The manifest files found under the watched paths, with their signatures, and the paths that failed."""

    signatures: dict[Path, FileSignature | None]
    errors: tuple[ManifestError, ...]


class ManifestSource:
    """Reads manifest paths (files or directories) into the store, once (`load`) or continuously (`watch`)."""

    def __init__(
        self,
        paths: Iterable[str | Path],
        store: SnapshotSink,
        transform: ClusterTransform | None = None,
        *,
        poll_interval: float = DEFAULT_POLL_INTERVAL,
        quiet_period: float = DEFAULT_QUIET_PERIOD,
        max_delay: float = DEFAULT_MAX_DELAY,
    ) -> None:
        self.paths: tuple[Path, ...] = tuple(Path(p) for p in paths)
        self.store = store
        self._transform = transform
        self._poll_interval = poll_interval
        self._quiet_period = quiet_period
        self._max_delay = max_delay
        self._files: dict[Path, FileState] = {}
        self._listing_errors: tuple[ManifestError, ...] = ()
        self._build_errors: tuple[ManifestError, ...] = ()
        self._last_listing: dict[Path, FileSignature | None] | None = None
        self._accepted: Cluster | None = None
        self._family_memo = FamilyMemo()  # unchanged files' Services are completed again on every scan
        self.scans = 0

    @property
    def errors(self) -> tuple[ManifestError, ...]:
        """Every current problem: missing paths, then per-file errors (by path), then cross-file errors."""
        per_file = tuple(error for path in sorted(self._files) for error in self._files[path].errors)
        return self._listing_errors + per_file + self._build_errors

    def load(self) -> ChangeSet:
        """Read whatever changed since the last call and apply the result to the store.

        Returns the store's change set: empty when nothing changed or the state was refused (see `errors`).
        """
        return self._apply(self._list_tree())

    async def watch(self) -> None:
        """Load, then follow changes until cancelled; run it as `asyncio.create_task(source.watch())`."""
        self.load()
        loop = asyncio.get_running_loop()
        while True:
            await asyncio.sleep(self._poll_interval)
            listing = self._list_tree()
            if listing.signatures == self._last_listing:
                continue
            quiet_since = first_seen = loop.time()
            while (
                loop.time() - quiet_since < self._quiet_period and loop.time() - first_seen < self._max_delay
            ):
                await asyncio.sleep(self._poll_interval)
                latest = self._list_tree()
                if latest.signatures != listing.signatures:
                    listing, quiet_since = latest, loop.time()
            self._apply(listing)

    def _list_tree(self) -> TreeListing:
        signatures: dict[Path, FileSignature | None] = {}
        errors: list[ManifestError] = []
        for path in self.paths:
            try:
                files = find_manifest_files([path])
            except ManifestErrors as problem:
                errors.extend(problem.errors)
                continue
            for file in files:
                signatures[file] = FileSignature.of(file)
        return TreeListing(signatures, tuple(errors))

    def refresh(self) -> ChangeSet:
        """Re-run `transform` and the EndpointSlice controller over the last accepted manifests.

        For callers whose transform depends on state outside the files (the lab's Pod readiness): call it
        when that state changes. Does nothing before the first accepted load.
        """
        if self._accepted is None:
            return self.store.replace(self.store.cluster)
        cluster = self._accepted if self._transform is None else self._transform(self._accepted)
        return self.store.replace(with_derived_endpoint_slices(cluster))

    def _apply(self, listing: TreeListing) -> ChangeSet:
        self.scans += 1
        self._last_listing = listing.signatures
        self._report_new(listing.errors, self._listing_errors)
        self._listing_errors = listing.errors
        if not self._refresh_files(listing.signatures) and self.scans > 1:
            return self.store.replace(self.store.cluster)
        objects = tuple(obj for path in sorted(self._files) for obj in self._files[path].good_objects)
        try:
            accepted = build_cluster(objects, self._accepted, self._family_memo)
        except ManifestErrors as problem:
            self._report_new(problem.errors, self._build_errors)
            self._build_errors = problem.errors
            log.warning(
                "manifests refused store_version=%d errors=%d", self.store.version, len(problem.errors)
            )
            return self.store.replace(self.store.cluster)
        if self._build_errors:
            log.info("manifests consistent again errors_cleared=%d", len(self._build_errors))
        self._build_errors = ()
        self._accepted = accepted
        return self.refresh()

    def _refresh_files(self, signatures: dict[Path, FileSignature | None]) -> bool:
        """Re-read files whose signature changed, forget removed ones; True when any file's state changed."""
        changed = False
        for gone in self._files.keys() - signatures.keys():
            dropped = len(self._files[gone].good_objects)
            log.info("manifest file removed file=%s objects_dropped=%d", gone, dropped)
            del self._files[gone]
            changed = True
        for path, signature in signatures.items():
            previous = self._files.get(path)
            if previous is not None and signature is not None and previous.signature == signature:
                continue
            state = self._read(path, signature, previous)
            if state != previous:
                self._files[path] = state
                changed = True
        return changed

    def _read(self, path: Path, signature: FileSignature | None, previous: FileState | None) -> FileState:
        last_good = previous.good_objects if previous is not None else ()
        old_errors = previous.errors if previous is not None else ()
        try:
            parsed = parse_file(path)
        except ManifestErrors as problem:
            self._report_new(problem.errors, old_errors, kept=len(last_good))
            return FileState(signature, last_good, problem.errors)
        if old_errors:
            log.info("manifest file recovered file=%s objects=%d", path, len(parsed.objects))
        for warning in parsed.warnings:
            log.warning("manifest warning: %s", warning)
        return FileState(signature, tuple(parsed.objects))

    @staticmethod
    def _report_new(
        errors: Sequence[ManifestError], already_reported: Sequence[ManifestError], kept: int | None = None
    ) -> None:
        """Log each error once, on the scan where it first appears, rather than on every re-read."""
        seen = {str(error) for error in already_reported}
        suffix = "" if kept is None else f" (last good objects kept: {kept})"
        for error in errors:
            if str(error) not in seen:
                log.warning("manifest error: %s%s", error, suffix)
