"""`kubeplane up`, `apply`, `delete`, `proxy`: run the daemon, change a running one, follow a real cluster.

`up` stays in the foreground with a status line on stderr and tears the lab down on Ctrl-C or SIGTERM
(`--keep` leaves it for `kubeplane lab down`). `apply` and `delete` send manifest files to the daemon of a
lab, which validates them exactly as it validates the watched files; a refusal prints the daemon's errors
and changes nothing. `proxy` runs kube-proxy for one node of a real cluster from its API server.

The daemon's modules (aiohttp, pyroute2, the proxiers) are imported inside the commands that run them, so
every other `kubeplane` command starts without paying for them.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
import sys
import time
from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

from kubeplane.model.errors import ManifestErrors
from kubeplane.model.parse import find_manifest_files
from kubeplane.netns.names import DEFAULT_LAB

if TYPE_CHECKING:
    from kubeplane.daemon.app import Daemon, DaemonOptions, DaemonStatus
    from kubeplane.daemon.proxiers import ProxyMode

FilesOption = Annotated[
    list[Path], typer.Option("-f", "--file", help="Manifest file or directory (repeatable).", exists=True)
]
LabOption = Annotated[str, typer.Option("--name", "--lab", help="Lab name (1-8 of [a-z0-9]).")]
ModeOption = Annotated[str, typer.Option("--mode", help="Proxy mode: iptables or ipvs.")]
STATUS_INTERVAL_SECONDS = 1.0
FIRST_SYNC_WAIT_SECONDS = 10.0
# SIGHUP too: a closed terminal or a dropped ssh session must not leave the lab's namespaces behind.
STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)


def register(app: typer.Typer) -> None:
    app.command("up")(up)
    app.command("apply")(apply)
    app.command("delete")(delete)
    app.command("proxy")(proxy)


def _mode(text: str) -> ProxyMode:
    if text == "iptables":
        return "iptables"
    if text == "ipvs":
        return "ipvs"
    raise typer.BadParameter(f"{text!r} is not iptables or ipvs", param_hint="--mode")


def _fail(message: str) -> typer.Exit:
    typer.echo(message, err=True)
    return typer.Exit(1)


def status_line(status: DaemonStatus, now: float) -> str:
    if status.last_sync_at is None or status.last_sync_seconds is None:
        sync = "last sync: none yet"
    else:
        ago = max(0.0, now - status.last_sync_at)
        sync = f"last sync {ago:.1f}s ago ({status.last_sync_seconds * 1000:.1f} ms)"
    health = "healthy" if status.healthy else "UNHEALTHY"
    return (
        f"nodes {status.nodes}  pods {status.pods}  services {status.services}  "
        f"version {status.version}  {sync}  {health}"
    )


def up(
    file: FilesOption,
    mode: ModeOption = "iptables",
    name: LabOption = DEFAULT_LAB,
    keep: Annotated[bool, typer.Option("--keep", help="Leave the lab up on exit.")] = False,
    http_host: Annotated[str, typer.Option("--http-host", help="Address of the HTTP API.")] = "127.0.0.1",
    http_port: Annotated[int, typer.Option("--http-port", help="Port of the HTTP API (0: any).")] = 0,
    min_sync_period: Annotated[
        float | None, typer.Option(help="Seconds; default: the configuration's, else 0.01.")
    ] = None,
    health_timeout: Annotated[float | None, typer.Option(help="Seconds; default: 2 x syncPeriod.")] = None,
    verbose: Annotated[bool, typer.Option("-v", "--verbose", help="Log at INFO instead of WARNING.")] = False,
) -> None:
    """Build the lab from FILE, proxy and serve DNS for it, and follow edits to FILE until stopped."""
    from kubeplane.daemon.app import DaemonOptions

    logging.basicConfig(
        level=logging.INFO if verbose else logging.WARNING,
        format="%(asctime)s %(levelname)s %(name)s %(message)s",
    )
    options = DaemonOptions(
        paths=tuple(file),
        lab=name,
        mode=_mode(mode),
        http_host=http_host,
        http_port=http_port,
        min_sync_period=min_sync_period,
        health_timeout=health_timeout,
        keep=keep,
    )
    asyncio.run(_up(options))


async def _up(options: DaemonOptions) -> None:
    from kubeplane.daemon.app import Daemon, DaemonStartError
    from kubeplane.daemon.proxiers import BackendUnavailable
    from kubeplane.netns.lab import LabError
    from kubeplane.netns.plan import LabPlanError

    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in STOP_SIGNALS:
        loop.add_signal_handler(signum, stop.set)
    daemon = Daemon(options)
    try:
        await daemon.start()
    except (DaemonStartError, BackendUnavailable, LabError, LabPlanError, ManifestErrors, OSError) as err:
        # OSError: not root, /run not writable, ...; `start` has undone what it did either way.
        raise _fail(f"kubeplane up: {err}") from None
    try:
        await _first_programming(daemon, stop)
        api = f"http://{daemon.http.host}:{daemon.http.port}"
        typer.echo(f"lab {options.lab} up; API {api}; Ctrl-C to stop", err=True)
        await _show_status(daemon, stop, interactive=sys.stderr.isatty())
    finally:
        await daemon.stop()
    typer.echo(f"lab {options.lab} {'kept' if options.keep else 'torn down'}", err=True)


async def _first_programming(daemon: Daemon, stop: asyncio.Event) -> None:
    """Until every node's rules and the DNS zone serve the manifests (bounded), or until asked to stop: the
    "up" line then means pods can reach services by name, not merely that the namespaces exist."""
    programmed = asyncio.ensure_future(daemon.wait_programmed(daemon.store.version, FIRST_SYNC_WAIT_SECONDS))
    stopping = asyncio.ensure_future(stop.wait())
    try:
        await asyncio.wait((programmed, stopping), return_when=asyncio.FIRST_COMPLETED)
    finally:
        for waiter in (programmed, stopping):
            waiter.cancel()
        await asyncio.gather(programmed, stopping, return_exceptions=True)


def status_changed(before: DaemonStatus | None, after: DaemonStatus) -> bool:
    """Whether a log (stderr not a terminal) gets a new status line: counts, version, health or the first
    sync changed; another sync of the same version alone does not."""
    return before is None or _shape(before) != _shape(after)


def _shape(status: DaemonStatus) -> DaemonStatus:
    synced_once = None if status.last_sync_at is None else 0.0
    return replace(status, last_sync_at=synced_once, last_sync_seconds=None)


async def _show_status(daemon: Daemon, stop: asyncio.Event, interactive: bool) -> None:
    """A terminal gets one line rewritten every second; a log gets a line each time the status changes."""
    shown: DaemonStatus | None = None
    try:
        while not stop.is_set():
            status = daemon.status()
            if interactive:
                typer.echo(f"\r\x1b[2K{status_line(status, time.time())}", err=True, nl=False)
            elif status_changed(shown, status):
                typer.echo(status_line(status, time.time()), err=True)
            shown = status
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), STATUS_INTERVAL_SECONDS)
    finally:
        if interactive:
            typer.echo("", err=True)


def _send(files: list[Path], lab: str, deleting: bool) -> None:
    from kubeplane.daemon.client import DaemonClient, DaemonNotRunning, DaemonRejected, DaemonRequestFailed

    try:
        client = DaemonClient.for_lab(lab)
        paths = find_manifest_files(files)
    except (DaemonNotRunning, ManifestErrors) as err:
        raise _fail(str(err)) from None
    failed = False
    for path in paths:
        try:
            text = path.read_text(encoding="utf-8")
            outcome = client.delete(text, str(path)) if deleting else client.apply(text, str(path))
        except OSError as err:
            typer.echo(f"{path}: cannot read: {err.strerror}", err=True)
            failed = True
            continue
        except DaemonRejected as rejected:
            for line in rejected.lines:
                typer.echo(line, err=True)
            failed = True
            continue
        except DaemonRequestFailed as err:
            raise _fail(str(err)) from None
        for change in outcome.changes:
            typer.echo(change)
        if not outcome.changes:
            typer.echo(f"{path}: unchanged")
    if failed:
        raise typer.Exit(1)


def apply(file: FilesOption, name: LabOption = DEFAULT_LAB) -> None:
    """Create or replace the objects of FILE in the running daemon of lab NAME."""
    _send(file, name, deleting=False)


def delete(file: FilesOption, name: LabOption = DEFAULT_LAB) -> None:
    """Delete the objects of FILE (by kind, namespace and name) from the running daemon of lab NAME."""
    _send(file, name, deleting=True)


def proxy(
    kubeconfig: Annotated[Path, typer.Option("--kubeconfig", help="Kubeconfig of the cluster.", exists=True)],
    node: Annotated[str, typer.Option("--node", help="The cluster node this proxy is for.")],
    mode: ModeOption = "iptables",
    host: Annotated[
        bool,
        typer.Option("--host", help="Program the CURRENT network namespace (a VM joined to the cluster)."),
    ] = False,
    context: Annotated[str | None, typer.Option("--context", help="Kubeconfig context.")] = None,
    name: LabOption = DEFAULT_LAB,
    http_port: Annotated[int, typer.Option("--http-port", help="Health/metrics port.")] = 10256,
) -> None:
    """kube-proxy for NODE from a real API server; without --host into a scratch namespace, never the host."""
    from kubeplane.daemon.api_proxy import ApiProxyOptions, run_api_proxy
    from kubeplane.daemon.proxiers import default_proxier_factory
    from kubeplane.sources.kubeconfig import KubeconfigError, load_kubeconfig

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s %(message)s")
    try:
        credentials = load_kubeconfig(kubeconfig, context)
    except KubeconfigError as err:
        raise _fail(str(err)) from None
    options = ApiProxyOptions(node=node, lab=name, mode=_mode(mode), host=host, http_port=http_port)

    async def run() -> None:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for signum in STOP_SIGNALS:
            loop.add_signal_handler(signum, stop.set)
        await run_api_proxy(credentials, options, default_proxier_factory, stop)

    asyncio.run(run())
