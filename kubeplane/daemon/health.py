"""kube-proxy's proxier health: healthy unless an update has been waiting too long to be programmed.

kube-proxy records the moment the *oldest* still-unprogrammed change was queued and the moment of the last
successful sync. `/healthz` and `/livez` fail (503) once that oldest queued change is older than the
health timeout (kube-proxy uses twice the sync period), i.e. when the proxy has stopped keeping up, not
merely when it is idle. `/healthz` additionally fails when the node is being deleted (kube-proxy's
"nodeEligible"), so a load balancer drains it; `/livez` ignores that, so the kubelet does not restart a
proxy on a draining node.

The daemon runs one proxy per lab node, so there is one `ProxierHealth` per node and a `HealthBoard` that
answers for one node (`?node=`) or for all (healthy only if every node is).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from datetime import UTC, datetime

GO_ZERO_TIME = "0001-01-01 00:00:00 +0000 UTC"


class UnknownNode(KeyError):
    """A health question named a node the daemon runs no proxy for."""


def go_time_string(timestamp: float | None) -> str:
    """Format like Go's time.Time.String() in UTC (what kube-proxy's JSON carries); None is Go's zero time."""
    if timestamp is None:
        return GO_ZERO_TIME
    moment = datetime.fromtimestamp(timestamp, tz=UTC)
    fraction = f"{moment.microsecond:06d}".rstrip("0")
    seconds = moment.strftime("%Y-%m-%d %H:%M:%S")
    return f"{seconds}{'.' + fraction if fraction else ''} +0000 UTC"


@dataclass(frozen=True)
class HealthStatus:
    """One answer to a health probe: what the HTTP layer turns into a status code and JSON body."""

    healthy: bool
    last_updated: float | None
    current_time: float
    node_eligible: bool

    def healthz_body(self) -> dict[str, object]:
        return {
            "lastUpdated": go_time_string(self.last_updated),
            "currentTime": go_time_string(self.current_time),
            "nodeEligible": self.node_eligible,
        }

    def livez_body(self) -> dict[str, object]:
        return {
            "lastUpdated": go_time_string(self.last_updated),
            "currentTime": go_time_string(self.current_time),
        }


class ProxierHealth:
    """One node proxy's health, fed by the daemon: `queued_update` on a change, `updated` after a sync."""

    def __init__(self, node_name: str, health_timeout: float, clock: Callable[[], float] = time.time) -> None:
        self.node_name = node_name
        self.health_timeout = health_timeout
        self._clock = clock
        self._oldest_queued: float | None = None
        self._last_updated: float | None = None
        self._node_eligible = True

    def queued_update(self) -> None:
        """A change is waiting to be programmed; only the oldest unprogrammed one counts."""
        if self._oldest_queued is None:
            self._oldest_queued = self._clock()

    def updated(self) -> None:
        """Rules were programmed: everything queued before now is served."""
        self._last_updated = self._clock()
        self._oldest_queued = None

    def set_node_eligible(self, eligible: bool) -> None:
        self._node_eligible = eligible

    @property
    def oldest_queued(self) -> float | None:
        return self._oldest_queued

    def healthy(self) -> bool:
        """What /healthz reports for this node right now (health check ports read it per request)."""
        return self.status().healthy

    def status(self, liveness: bool = False) -> HealthStatus:
        now = self._clock()
        keeping_up = self._oldest_queued is None or now - self._oldest_queued <= self.health_timeout
        healthy = keeping_up and (liveness or self._node_eligible)
        return HealthStatus(healthy, self._last_updated, now, self._node_eligible)


class HealthBoard:
    """The health of every node's proxy in one daemon."""

    def __init__(self, nodes: Iterable[ProxierHealth] = (), clock: Callable[[], float] = time.time) -> None:
        self._clock = clock
        self._by_node: dict[str, ProxierHealth] = {h.node_name: h for h in nodes}

    def add(self, health: ProxierHealth) -> None:
        self._by_node[health.node_name] = health

    def remove(self, node_name: str) -> None:
        self._by_node.pop(node_name, None)

    def node(self, node_name: str) -> ProxierHealth:
        try:
            return self._by_node[node_name]
        except KeyError:
            raise UnknownNode(node_name) from None

    def status(self, node_name: str | None = None, liveness: bool = False) -> HealthStatus:
        """One node's status, or all folded: healthy and eligible only if each is, oldest lastUpdated."""
        if node_name is not None:
            return self.node(node_name).status(liveness)
        statuses = [h.status(liveness) for h in self._by_node.values()]
        if not statuses:
            return HealthStatus(True, None, self._clock(), True)
        updates = [s.last_updated for s in statuses]
        oldest_update = None if None in updates else min(u for u in updates if u is not None)
        return HealthStatus(
            healthy=all(s.healthy for s in statuses),
            last_updated=oldest_update,
            current_time=max(s.current_time for s in statuses),
            node_eligible=all(s.node_eligible for s in statuses),
        )
