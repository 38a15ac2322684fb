"""`kubeplane up`, `apply`, `delete`, `proxy`: run the daemon, change a running one, follow a real cluster.

`up` stays in the foreground with a status line on stderr and tears the lab down on Ctrl-C or SIGTERM
(`--keep` leaves it for `kubeplane lab down`). `apply` and `delete` send manifest files to the daemon of a
lab, which validates them exactly as it validates the watched files; a refusal prints the daemon's errors
and changes nothing. `proxy` runs kube-proxy for one node of a real cluster from its API server.
"""

from __future__ import annotations

import asyncio
import logging
import signal
import sys
import time
from pathlib import Path
from typing import Annotated

import typer

from kubeplane.daemon.api_proxy import ApiProxyOptions, run_api_proxy
from kubeplane.daemon.app import Daemon, DaemonOptions, DaemonStartError, DaemonStatus
from kubeplane.daemon.client import DaemonClient, DaemonNotRunning, DaemonRejected, DaemonRequestFailed
from kubeplane.daemon.proxiers import BackendUnavailable, ProxyMode, default_proxier_factory
from kubeplane.model.errors import ManifestErrors
from kubeplane.model.parse import find_manifest_files
from kubeplane.netns.lab import LabError
from kubeplane.netns.names import DEFAULT_LAB
from kubeplane.netns.plan import LabPlanError
from kubeplane.sources.kubeconfig import KubeconfigError, load_kubeconfig

FilesOption = Annotated[
    list[Path], typer.Option("-f", "--file", help="Manifest file or directory (repeatable).", exists=True)
]
LabOption = Annotated[str, typer.Option("--name", "--lab", help="Lab name (1-8 of [a-z0-9]).")]
ModeOption = Annotated[str, typer.Option("--mode", help="Proxy mode: iptables or ipvs.")]
STATUS_INTERVAL_SECONDS = 1.0


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
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(signum, stop.set)
    daemon = Daemon(options)
    try:
        await daemon.start()
    except (DaemonStartError, BackendUnavailable, LabError, LabPlanError, ManifestErrors) as err:
        raise _fail(f"kubeplane up: {err}") from None
    typer.echo(
        f"lab {options.lab} up; API http://{daemon.http.host}:{daemon.http.port}; Ctrl-C to stop", err=True
    )
    interactive = sys.stderr.isatty()
    try:
        while not stop.is_set():
            line = status_line(daemon.status(), time.time())
            typer.echo(f"\r\x1b[2K{line}" if interactive else line, err=True, nl=not interactive)
            try:
                await asyncio.wait_for(stop.wait(), STATUS_INTERVAL_SECONDS if interactive else 30.0)
            except TimeoutError:
                continue
    finally:
        if interactive:
            typer.echo("", err=True)
        await daemon.stop()
    typer.echo(f"lab {options.lab} {'kept' if options.keep else 'torn down'}", err=True)


def _send(files: list[Path], lab: str, deleting: bool) -> None:
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
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s %(message)s")
    try:
        credentials = load_kubeconfig(kubeconfig, context)
    except KubeconfigError as err:
        raise _fail(str(err)) from None
    options = ApiProxyOptions(node=node, lab=name, mode=_mode(mode), host=host, http_port=http_port)

    async def run() -> None:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for signum in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(signum, stop.set)
        await run_api_proxy(credentials, options, default_proxier_factory, stop)

    asyncio.run(run())
