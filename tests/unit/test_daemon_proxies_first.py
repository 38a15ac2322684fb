"""The daemon's DNS and lab followers let the node proxies start a change first, never waiting long."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from kubeplane.daemon import app
from kubeplane.daemon.app import Daemon, DaemonOptions


class FakeNodeLoop:
    """A node loop whose sync of a version starts when the test says so (or never)."""

    def __init__(self) -> None:
        self.started = asyncio.Event()
        self.asked: list[int] = []

    async def wait_sync_started(self, version: int) -> None:
        self.asked.append(version)
        await self.started.wait()


def _daemon(tmp_path: Path, loops: dict[str, FakeNodeLoop]) -> Daemon:
    daemon = Daemon(DaemonOptions(paths=(tmp_path,), lab="kpunit"))
    daemon.node_loops = loops  # type: ignore[assignment]
    return daemon


async def test_followers_wait_until_every_node_sync_has_started(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(app, "PROXIES_FIRST_SECONDS", 60.0)  # the bound is not what this test is about
    loops = {"a": FakeNodeLoop(), "b": FakeNodeLoop()}
    loops["a"].started.set()
    waiting = asyncio.create_task(_daemon(tmp_path, loops)._proxies_first(7))
    await asyncio.sleep(0)
    await asyncio.sleep(0)
    assert not waiting.done()  # node b has not started yet
    loops["b"].started.set()
    await asyncio.wait_for(waiting, timeout=5)
    assert loops["a"].asked == [7] and loops["b"].asked == [7]


async def test_a_proxy_that_never_starts_does_not_hold_the_followers(tmp_path: Path) -> None:
    stuck = FakeNodeLoop()
    await asyncio.wait_for(_daemon(tmp_path, {"a": stuck})._proxies_first(3), timeout=5)
    assert stuck.asked == [3] and not stuck.started.is_set()
