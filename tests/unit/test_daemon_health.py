"""kube-proxy health semantics: 503 only when a queued update has waited longer than the timeout."""

from __future__ import annotations

from kubeplane.daemon.health import GO_ZERO_TIME, HealthBoard, ProxierHealth, go_time_string


class FakeClock:
    def __init__(self, now: float = 1_700_000_000.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


def test_idle_proxy_with_nothing_queued_is_healthy_forever() -> None:
    clock = FakeClock()
    health = ProxierHealth("n1", health_timeout=60.0, clock=clock)
    clock.now += 10_000
    status = health.status()
    assert status.healthy
    assert status.healthz_body()["lastUpdated"] == GO_ZERO_TIME


def test_queued_update_older_than_timeout_is_unhealthy_until_synced() -> None:
    clock = FakeClock()
    health = ProxierHealth("n1", health_timeout=60.0, clock=clock)
    health.queued_update()
    clock.now += 59
    assert health.status().healthy
    clock.now += 2
    assert not health.status().healthy
    assert not health.status(liveness=True).healthy
    health.updated()
    assert health.status().healthy
    assert health.status().last_updated == clock.now


def test_only_the_oldest_queued_update_counts() -> None:
    clock = FakeClock()
    health = ProxierHealth("n1", health_timeout=60.0, clock=clock)
    health.queued_update()
    clock.now += 50
    health.queued_update()  # a newer change must not reset the age of the older one
    clock.now += 20
    assert not health.status().healthy


def test_ineligible_node_fails_healthz_but_not_livez() -> None:
    health = ProxierHealth("n1", health_timeout=60.0, clock=FakeClock())
    health.set_node_eligible(False)
    assert not health.status().healthy
    assert health.status(liveness=True).healthy
    assert health.status().healthz_body()["nodeEligible"] is False
    assert "nodeEligible" not in health.status(liveness=True).livez_body()


def test_board_is_unhealthy_when_any_node_is_and_answers_per_node() -> None:
    clock = FakeClock()
    stuck = ProxierHealth("stuck", health_timeout=1.0, clock=clock)
    fine = ProxierHealth("fine", health_timeout=1.0, clock=clock)
    board = HealthBoard([stuck, fine], clock=clock)
    fine.updated()
    stuck.queued_update()
    clock.now += 5
    assert not board.status().healthy
    assert board.status("fine").healthy
    assert not board.status("stuck").healthy


def test_go_time_string_matches_go_layout() -> None:
    assert go_time_string(0.0) == "1970-01-01 00:00:00 +0000 UTC"
    assert go_time_string(1.25) == "1970-01-01 00:00:01.25 +0000 UTC"
