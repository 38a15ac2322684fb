"""From cluster snapshots to ready-to-install zone and answer updates, computed aside from the serving loop.

A change to one service costs a millisecond or two here (its records, its reverse names, the answers that
read them), against a second for a whole rebuild at a thousand services; `prepare` is pure with respect
to the server, so it may run on a worker thread while queries keep being answered, and the server
installs the result on its loop in one step (`AnswerTable.apply`, or a new table after a full rebuild).
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from kubeplane.dns.answers import AnswerTable, PackedNames, pack_names
from kubeplane.dns.forward import Upstream, parse_upstream
from kubeplane.dns.zone_builder import ZoneBuilder, ZoneDelta
from kubeplane.model.objects import Cluster
from kubeplane.store import ObjectChange, diff_clusters

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class PreparedUpdate:
    """A zone update ready to install: either a whole new `table`, or `packed` answers for `delta`."""

    cluster: Cluster
    upstreams: tuple[Upstream, ...]
    delta: ZoneDelta
    packed: PackedNames
    table: AnswerTable | None
    seconds: float  # what preparing it cost


class ZoneUpdater:
    """Owns the incremental zone; one `prepare` at a time (a lock makes concurrent callers wait)."""

    def __init__(
        self, explicit_upstreams: tuple[Upstream, ...] | None, clock: Callable[[], float] = time.time
    ) -> None:
        """`clock`: where SOA serials come from (seconds since the epoch)."""
        self._explicit_upstreams = explicit_upstreams
        self._clock = clock
        self._lock = threading.Lock()
        self._builder: ZoneBuilder | None = None
        self._cluster: Cluster | None = None
        self._upstreams: tuple[Upstream, ...] = ()

    def build(self, cluster: Cluster) -> PreparedUpdate:
        """A whole new zone and answer table for `cluster`, whatever was prepared before."""
        started = time.perf_counter()
        with self._lock:
            upstreams = self._upstreams_for(cluster)
            self._builder = ZoneBuilder(cluster, self._serial())
            self._cluster, self._upstreams = cluster, upstreams
            delta = self._builder.delta
        return self._finish(cluster, upstreams, delta, started)

    def prepare(
        self, cluster: Cluster, changes: Sequence[ObjectChange] | None = None
    ) -> PreparedUpdate | None:
        """The update from the last prepared cluster to `cluster` (None when they are equal).

        `changes`: how `cluster` differs from the last one prepared (a store change set's), or None to diff
        here. The SOA serial becomes the current time in seconds, as CoreDNS stamps its last modification.
        """
        if self._builder is None or self._cluster is None:
            return self.build(cluster)
        started = time.perf_counter()
        with self._lock:
            upstreams = self._upstreams_for(cluster)
            if bool(upstreams) != bool(self._upstreams):  # answers chase CNAMEs upstream, or stop to
                self._builder = ZoneBuilder(cluster, self._serial())
                delta = self._builder.delta
            else:
                if changes is None:
                    changes = diff_clusters(self._cluster, cluster)
                if not changes and upstreams == self._upstreams:
                    return None
                delta = self._builder.apply(cluster, changes, self._serial())
            self._cluster, self._upstreams = cluster, upstreams
        return self._finish(cluster, upstreams, delta, started)

    def _upstreams_for(self, cluster: Cluster) -> tuple[Upstream, ...]:
        if self._explicit_upstreams is not None:
            return self._explicit_upstreams
        return tuple(parse_upstream(u) for u in cluster.kubeplane_config.upstream_resolvers)

    def _serial(self) -> int:
        return int(self._clock()) & 0xFFFFFFFF

    def _finish(
        self, cluster: Cluster, upstreams: tuple[Upstream, ...], delta: ZoneDelta, started: float
    ) -> PreparedUpdate:
        """Pack the answers `delta` changed (all of them, into a new table, when it is full)."""
        chase = bool(upstreams)
        if delta.full:
            table: AnswerTable | None = AnswerTable(delta.zone, chase_upstream=chase)
            packed: PackedNames = {}
        else:
            table, packed = None, pack_names(delta.zone, delta.affected_names, chase)
        return PreparedUpdate(cluster, upstreams, delta, packed, table, time.perf_counter() - started)
