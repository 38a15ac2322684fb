"""Run a program inside a named network namespace (one of /run/netns/*).

nsenter (util-linux, present on every Debian/Ubuntu) switches only the network namespace, so the program
keeps the host's filesystem view; `ip netns exec` would also remount /sys and bind /etc/netns files, which
pod-facing commands want (see kubeplane.netns for that) but rule loaders such as iptables-restore do not need.
"""

from __future__ import annotations

import asyncio
import subprocess
from collections.abc import Sequence

NETNS_DIR = "/run/netns"


class CommandFailed(RuntimeError):
    """A program run in a namespace exited non-zero; the message carries its stderr."""

    def __init__(self, argv: Sequence[str], netns: str | None, returncode: int, stderr: str) -> None:
        where = f" in netns {netns}" if netns else ""
        super().__init__(f"{argv[0]}{where} exited {returncode}: {stderr.strip()}")
        self.returncode = returncode
        self.stderr = stderr


def netns_argv(netns: str | None, argv: Sequence[str]) -> list[str]:
    """The argv that runs `argv` in `netns`; None means the current namespace (the explicit --host case)."""
    if netns is None:
        return list(argv)
    return ["nsenter", f"--net={NETNS_DIR}/{netns}", "--", *argv]


def run_in_netns(netns: str | None, argv: Sequence[str], stdin: str | None = None, check: bool = True) -> str:
    """Run synchronously and return stdout; raise CommandFailed on a non-zero exit when `check`."""
    proc = subprocess.run(netns_argv(netns, argv), input=stdin, capture_output=True, text=True)
    if check and proc.returncode != 0:
        raise CommandFailed(argv, netns, proc.returncode, proc.stderr)
    return proc.stdout


async def run_in_netns_async(
    netns: str | None, argv: Sequence[str], stdin: str | None = None, check: bool = True
) -> str:
    """The asyncio twin of run_in_netns, for the daemon's sync loops."""
    proc = await asyncio.create_subprocess_exec(
        *netns_argv(netns, argv),
        stdin=asyncio.subprocess.PIPE if stdin is not None else asyncio.subprocess.DEVNULL,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    try:
        out, err = await proc.communicate(stdin.encode() if stdin is not None else None)
    except asyncio.CancelledError:
        await _reap(proc)
        raise
    if check and proc.returncode != 0:
        raise CommandFailed(argv, netns, proc.returncode or 0, err.decode(errors="replace"))
    return out.decode(errors="replace")


async def _reap(proc: asyncio.subprocess.Process) -> None:
    """End a cancelled command and wait for it, so asyncio's child watcher (not a transport's close())
    collects its exit status; otherwise CPython 3.11 may log "Unknown child process pid"."""
    if proc.returncode is None:
        proc.kill()
    await asyncio.shield(proc.wait())
