"""The bounded-frequency runner: rate limit with burst, coalescing, periodic resync, retry after failure."""

from __future__ import annotations

import asyncio

import pytest

from kubeplane.daemon.runner import BoundedFrequencyRunner, RunGate, RunnerConfigError


def test_gate_allows_burst_then_defers_to_next_token() -> None:
    gate = RunGate(min_interval=1.0, max_interval=60.0, burst=2, started_at=100.0)
    assert gate.try_start(100.0)
    assert gate.try_start(100.0)
    assert not gate.try_start(100.0)
    assert gate.next_wakeup() == pytest.approx(101.0)
    assert not gate.try_start(100.5)
    assert gate.next_wakeup() == pytest.approx(101.0)
    assert gate.try_start(101.0)


def test_gate_refills_at_most_burst_tokens() -> None:
    gate = RunGate(min_interval=1.0, max_interval=60.0, burst=2, started_at=0.0)
    assert gate.try_start(0.0) and gate.try_start(0.0)
    # A long idle stretch earns only `burst` tokens, not one per elapsed interval.
    assert gate.try_start(50.0) and gate.try_start(50.0)
    assert not gate.try_start(50.0)


def test_gate_periodic_deadline_moves_after_each_run() -> None:
    gate = RunGate(min_interval=1.0, max_interval=30.0, burst=1, started_at=0.0)
    assert gate.next_wakeup() == 30.0
    assert gate.try_start(10.0)
    gate.finished(10.5)
    assert gate.next_wakeup() == 40.5


def test_gate_retry_after_brings_wakeup_forward_but_never_back() -> None:
    gate = RunGate(min_interval=1.0, max_interval=30.0, burst=1, started_at=0.0)
    gate.retry_after(0.0, 5.0)
    gate.retry_after(0.0, 8.0)
    assert gate.next_wakeup() == 5.0


def test_gate_zero_min_interval_never_limits() -> None:
    gate = RunGate(min_interval=0.0, max_interval=1.0, burst=1, started_at=0.0)
    assert all(gate.try_start(0.0) for _ in range(100))


@pytest.mark.parametrize(
    ("min_interval", "max_interval", "burst"), [(-1, 1, 1), (2, 1, 1), (0, 0, 1), (0, 1, 0)]
)
def test_gate_rejects_impossible_configuration(min_interval: float, max_interval: float, burst: int) -> None:
    with pytest.raises(RunnerConfigError):
        RunGate(min_interval, max_interval, burst, started_at=0.0)


async def _wait_for_runs(runner: BoundedFrequencyRunner, count: int, timeout: float = 2.0) -> None:
    async with asyncio.timeout(timeout):
        while runner.runs < count:
            await asyncio.sleep(0.005)


async def test_runner_coalesces_requests_made_during_a_sync() -> None:
    release = asyncio.Event()
    entered = asyncio.Event()

    async def slow_sync() -> None:
        entered.set()
        await release.wait()

    runner = BoundedFrequencyRunner("t", slow_sync, min_interval=0.0, max_interval=60.0, burst=1)
    runner.start()
    try:
        runner.run()
        await entered.wait()
        for _ in range(50):
            runner.run()
        release.set()
        await _wait_for_runs(runner, 2)
        await asyncio.sleep(0.1)
        assert runner.runs == 2
    finally:
        await runner.stop()


async def test_runner_rate_limits_a_storm_to_burst_plus_one_per_interval() -> None:
    async def sync() -> None:
        return None

    runner = BoundedFrequencyRunner("t", sync, min_interval=0.4, max_interval=60.0, burst=2)
    runner.start()
    try:
        for _ in range(10):
            runner.run()
            await asyncio.sleep(0.005)
        # The first two run at once (burst), the rest coalesce behind the limiter.
        assert runner.runs == 2
        await _wait_for_runs(runner, 3)
        await asyncio.sleep(0.05)
        assert runner.runs == 3
    finally:
        await runner.stop()


async def test_runner_resyncs_periodically_without_requests() -> None:
    async def sync() -> None:
        return None

    runner = BoundedFrequencyRunner("t", sync, min_interval=0.0, max_interval=0.05, burst=1)
    runner.start()
    try:
        await _wait_for_runs(runner, 3)
    finally:
        await runner.stop()


async def test_runner_retries_a_failed_sync_without_a_new_request() -> None:
    attempts: list[int] = []

    async def flaky_sync() -> None:
        attempts.append(1)
        if len(attempts) == 1:
            raise RuntimeError("iptables-restore exited 1")

    runner = BoundedFrequencyRunner(
        "t", flaky_sync, min_interval=0.0, max_interval=60.0, burst=1, retry_interval=0.02
    )
    runner.start()
    try:
        runner.run()
        await _wait_for_runs(runner, 2)
        assert len(attempts) == 2
    finally:
        await runner.stop()
