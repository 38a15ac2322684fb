"""Which iptables binaries to run (nft or legacy backend, v4 or v6), and running them in a namespace.

Default backend: nft (`iptables-nft-restore`). It is Debian's default alternative, so `iptables-save` in a
node namespace shows what we loaded without extra flags, and the live trace helper relies on it: nftables'
`meta nftrace` and `xtables-monitor --trace` only see rules loaded through the nft backend. The legacy
backend stays selectable for comparison (and for kernels without nf_tables).
"""

from __future__ import annotations

import asyncio
import fcntl
import logging
from collections.abc import AsyncIterator
from dataclasses import dataclass
from enum import StrEnum

from kubeplane.model.objects import IPFamily
from kubeplane.netns.run import CommandFailed, netns_argv, run_in_netns, run_in_netns_async

log = logging.getLogger(__name__)


class IptablesBackend(StrEnum):
    NFT = "nft"
    LEGACY = "legacy"


DEFAULT_BACKEND = IptablesBackend.NFT
# While Python renders the next chunk the event loop is busy and nothing tops the pipe up: restore can only
# parse what the pipe buffer holds. 64 KiB (Linux's default) is a few hundred rules, so restore sat idle
# during most of each render; 1 MiB (the default /proc/sys/fs/pipe-max-size) holds several chunks.
RESTORE_PIPE_BYTES = 1 << 20


@dataclass(frozen=True)
class IptablesTools:
    """The iptables programs of one backend and family, run inside `netns` (None: the current namespace)."""

    netns: str | None
    family: IPFamily = "IPv4"
    backend: IptablesBackend = DEFAULT_BACKEND

    def program(self, suffix: str = "") -> str:
        """`iptables-nft`, `ip6tables-legacy-restore`, ...: Debian installs all of them in /usr/sbin."""
        base = "ip6tables" if self.family == "IPv6" else "iptables"
        return f"{base}-{self.backend.value}{suffix}"

    def restore_argv(self) -> list[str]:
        # --noflush: only the chains the input declares are flushed; -w: wait for the xtables lock.
        return [self.program("-restore"), "-w", "--noflush"]

    def save_argv(self, table: str) -> list[str]:
        return [self.program("-save"), "-t", table]

    def chain_exists_argv(self, table: str, chain: str) -> list[str]:
        return [self.program(), "-w", "-t", table, "-S", chain]

    def restore(self, text: str) -> None:
        run_in_netns(self.netns, self.restore_argv(), stdin=text)

    async def restore_async(self, text: str) -> None:
        await run_in_netns_async(self.netns, self.restore_argv(), stdin=text)

    async def restore_stream_async(self, chunks: AsyncIterator[str]) -> None:
        """Feed `chunks` to one iptables-restore as they are produced (see kubeplane.proxy.iptables.stream);
        raises CommandFailed if it exits non-zero. If producing a chunk raises, restore is killed before
        it reads a COMMIT it was not meant to, and the error propagates."""
        argv = self.restore_argv()
        proc = await asyncio.create_subprocess_exec(
            *netns_argv(self.netns, argv),
            stdin=asyncio.subprocess.PIPE,
            stdout=asyncio.subprocess.DEVNULL,
            stderr=asyncio.subprocess.PIPE,
        )
        assert proc.stdin is not None and proc.stderr is not None
        _widen_pipe(proc.stdin)
        stderr_task = asyncio.ensure_future(proc.stderr.read())
        try:
            async for chunk in chunks:
                proc.stdin.write(chunk.encode())
                await proc.stdin.drain()
                # drain() returns without yielding while the pipe has room; yield so that other tasks
                # (the iptables-save reads a full sync runs meanwhile) are served between chunks.
                await asyncio.sleep(0)
        except (BrokenPipeError, ConnectionResetError):
            pass  # restore gave up early; its exit status and stderr say why
        except BaseException:
            proc.kill()
            await asyncio.shield(proc.wait())
            stderr_task.cancel()
            raise
        finally:
            proc.stdin.close()
        returncode = await proc.wait()
        stderr = (await stderr_task).decode(errors="replace")
        if returncode != 0:
            raise CommandFailed(argv, self.netns, returncode, stderr)

    async def save_async(self, table: str) -> str:
        return await run_in_netns_async(self.netns, self.save_argv(table))

    async def chain_exists_async(self, table: str, chain: str) -> bool:
        try:
            await run_in_netns_async(self.netns, self.chain_exists_argv(table, chain))
        except CommandFailed:
            return False
        return True


def _widen_pipe(writer: asyncio.StreamWriter) -> None:
    """Grow the pipe to RESTORE_PIPE_BYTES; a kernel that refuses keeps the default size (only slower)."""
    pipe = writer.transport.get_extra_info("pipe")
    try:
        fcntl.fcntl(pipe.fileno(), fcntl.F_SETPIPE_SZ, RESTORE_PIPE_BYTES)
    except (OSError, AttributeError) as err:
        log.debug("could not widen restore pipe error=%s", err)
