"""kube-proxy's BoundedFrequencyRunner, in asyncio.

A proxy must react to every change quickly but must not re-program the kernel for each of a thousand changes
arriving together, and must re-assert its rules now and then even when nothing changed. kube-proxy solves this
with one runner per proxier:

- `run()` asks for a sync "soon"; requests made while one is pending or in progress coalesce into one
  more run;
- a token bucket (rate 1/min_interval, `burst` tokens, starting full) decides whether a requested run may
  start now; when it may not, the run is deferred to the moment the next token exists;
- every run (requested or not) pushes the periodic deadline `max_interval` into the future, so a full resync
  happens at least that often.

`RunGate` holds that decision as pure arithmetic over times a caller passes in (tested with a fake clock);
`BoundedFrequencyRunner` is the thin asyncio loop around it.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field

log = logging.getLogger(__name__)

SyncFunction = Callable[[], Awaitable[None]]


class RunnerConfigError(ValueError):
    """The runner's periods or burst cannot describe a schedule (negative, or min above max)."""


@dataclass
class RunGate:
    """Token bucket plus periodic deadline: when may the next run start?  Times are caller-supplied seconds.

    Mutable on purpose: it is the private bookkeeping of one runner and never leaves it.
    """

    min_interval: float
    max_interval: float
    burst: int
    started_at: float
    tokens: float = field(init=False)
    refilled_at: float = field(init=False)
    periodic_due: float = field(init=False)
    retry_due: float | None = field(init=False, default=None)

    def __post_init__(self) -> None:
        if self.min_interval < 0 or self.max_interval <= 0 or self.min_interval > self.max_interval:
            raise RunnerConfigError(
                f"need 0 <= min_interval ({self.min_interval}) <= max_interval ({self.max_interval}), max > 0"
            )
        if self.burst < 1:
            raise RunnerConfigError(f"burst must be at least 1, got {self.burst}")
        self.tokens = float(self.burst)
        self.refilled_at = self.started_at
        self.periodic_due = self.started_at + self.max_interval

    def _refill(self, now: float) -> None:
        if self.min_interval == 0:
            self.tokens = float(self.burst)
        else:
            earned = (now - self.refilled_at) / self.min_interval
            self.tokens = min(float(self.burst), self.tokens + earned)
        self.refilled_at = now

    def try_start(self, now: float) -> bool:
        """Take a token if one is available: True means the caller runs now and must call `finished` after."""
        self._refill(now)
        if self.tokens >= 1.0:
            self.tokens -= 1.0
            self.retry_due = None
            return True
        self.retry_due = now + (1.0 - self.tokens) * self.min_interval
        return False

    def finished(self, now: float) -> None:
        """A run ended: the next unrequested run is a full period away."""
        self.periodic_due = now + self.max_interval

    def retry_after(self, now: float, seconds: float) -> None:
        """Ask for a run no later than `now + seconds` (kube-proxy's RetryAfter, used after a failed sync)."""
        due = now + seconds
        self.retry_due = due if self.retry_due is None else min(self.retry_due, due)

    def next_wakeup(self) -> float:
        """The earliest moment something is due: the periodic run or a deferred/retried one."""
        return self.periodic_due if self.retry_due is None else min(self.periodic_due, self.retry_due)


class BoundedFrequencyRunner:
    """Runs `sync` when asked (rate-limited), and at least every `max_interval`, one run at a time.

    `sync` failures are logged and retried after `retry_interval` (default: min_interval, at least 0.1 s);
    they never stop the loop. The runner does not start by itself: call `run()` once for the initial sync,
    as kube-proxy does when its caches are ready.
    """

    def __init__(
        self,
        name: str,
        sync: SyncFunction,
        min_interval: float,
        max_interval: float,
        burst: int = 2,
        retry_interval: float | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.name = name
        self._sync = sync
        self._clock = clock
        self._gate = RunGate(min_interval, max_interval, burst, started_at=clock())
        self._retry_interval = retry_interval if retry_interval is not None else max(min_interval, 0.1)
        self._requested = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self.runs = 0

    def run(self) -> None:
        """Request a sync soon; never blocks, coalesces with any request not yet served."""
        self._requested.set()

    def retry_after(self, seconds: float) -> None:
        self._gate.retry_after(self._clock(), seconds)
        self._requested.set()

    def start(self) -> None:
        if self._task is None:
            self._task = asyncio.get_running_loop().create_task(self._loop(), name=f"runner-{self.name}")

    async def stop(self) -> None:
        """Cancel the loop; a sync in progress is cancelled at its next await."""
        if self._task is None:
            return
        self._task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await self._task
        self._task = None

    async def _loop(self) -> None:
        pending = False
        while True:
            timeout = max(0.0, self._gate.next_wakeup() - self._clock())
            try:
                await asyncio.wait_for(self._requested.wait(), timeout)
            except TimeoutError:
                pending = pending or self._clock() >= self._gate.next_wakeup() - 1e-3
            if self._requested.is_set():
                self._requested.clear()
                pending = True
            if pending and self._gate.try_start(self._clock()):
                pending = False
                await self._run_once()

    async def _run_once(self) -> None:
        self.runs += 1
        try:
            await self._sync()
        except asyncio.CancelledError:
            raise
        except Exception as err:
            debug = log.isEnabledFor(logging.DEBUG)
            log.error("sync failed runner=%s error=%s", self.name, err, exc_info=debug)
            self._gate.retry_after(self._clock(), self._retry_interval)
        self._gate.finished(self._clock())
