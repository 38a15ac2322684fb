"""`kubeplane lab up|down|list`, `kubeplane exec` and `kubeplane curl`: the lab from the command line.

Targets name where a command runs: `POD` (in `-n NAMESPACE`, default `default`), `NAMESPACE/POD`,
`node/NAME` or `external`.
"""

from __future__ import annotations

import sys
import time
from pathlib import Path
from typing import Annotated

import typer

from kubeplane.netns import names
from kubeplane.netns.clients import NameResolutionError, ResponseError
from kubeplane.netns.lab import Lab, LabError, list_labs, load_manifests
from kubeplane.netns.names import BadLabName
from kubeplane.netns.plan import LabPlanError
from kubeplane.netns.state import StateError, process_cmdline

LabOption = Annotated[str, typer.Option("--name", "--lab", help="Lab name: 1-8 characters of [a-z0-9].")]
NamespaceOption = Annotated[str, typer.Option("-n", "--namespace", help="Namespace of POD.")]
TargetArgument = Annotated[
    str, typer.Argument(help="POD, NAMESPACE/POD, node/NAME or external.", metavar="TARGET")
]


def register(app: typer.Typer) -> None:
    lab_app = typer.Typer(help="Nodes and pods as network namespaces, with workloads.", no_args_is_help=True)
    lab_app.command("up")(up)
    lab_app.command("down")(down)
    lab_app.command("list")(list_command)
    app.add_typer(lab_app, name="lab")
    app.command("exec", context_settings={"allow_interspersed_args": False, "ignore_unknown_options": True})(
        exec_command
    )
    app.command("curl")(curl)


def _fail(message: str) -> typer.Exit:
    typer.echo(f"error: {message}", err=True)
    return typer.Exit(1)


def _lab(name: str) -> Lab:
    try:
        return Lab(name)
    except BadLabName as err:
        raise _fail(str(err)) from None


def _target(target: str, namespace: str) -> str:
    if target == "external" or "/" in target:
        return target
    return f"{namespace}/{target}"


def _progress(step: str, done: int, total: int) -> None:
    if sys.stderr.isatty():
        end = "\n" if done == total else ""
        typer.echo(f"\r  {step:<9} {done}/{total}", err=True, nl=False)
        typer.echo(end, err=True, nl=False)


def up(
    file: Annotated[
        list[Path], typer.Option("-f", "--file", help="Manifest file or directory; repeatable.", exists=True)
    ],
    name: LabOption = names.DEFAULT_LAB,
    workloads: Annotated[bool, typer.Option(help="Start the pods' workloads (the supervisor).")] = True,
) -> None:
    """Build a lab from manifests: a namespace per node and pod, the underlay, the external client."""
    from kubeplane.model.errors import ManifestError, ManifestErrors

    lab = _lab(name)
    started = time.monotonic()
    try:
        cluster = load_manifests(file)
        typer.echo(f"lab {name}: {len(cluster.nodes)} nodes, {len(cluster.pods)} pods", err=True)
        lab.up(cluster, workloads=workloads, progress=_progress)
    except (ManifestError, ManifestErrors, LabPlanError, LabError, OSError) as err:
        raise _fail(str(err)) from None
    ready = len(lab.ready_pods()) if workloads else 0
    typer.echo(
        f"lab {name} up in {time.monotonic() - started:.1f}s: {len(lab.plan.all_netnses)} namespaces, "
        f"{ready}/{len(lab.plan.pods)} pods serving"
    )
    first = next((p for p in lab.plan.pods if not p.host_network), None)
    if first is not None:
        where = f"--lab {name} -n {first.namespace} {first.name}"
        typer.echo(f"try: kubeplane exec {where} -- cat /etc/resolv.conf")
    typer.echo(f"remove: kubeplane lab down --name {name}")


def down(name: LabOption = names.DEFAULT_LAB) -> None:
    """Remove every namespace, /etc/netns entry and process the lab made (also after a crash)."""
    try:
        report = _lab(name).down()
    except (StateError, OSError) as err:
        raise _fail(str(err)) from None
    typer.echo(
        f"lab {name} down: {report.netnses_removed} namespaces, "
        f"{report.etc_dirs_removed} /etc/netns entries, {report.processes_stopped} processes"
    )


def list_command() -> None:
    """Labs on this machine, with their size and whether their supervisor runs."""
    labs = list_labs()
    if not labs:
        typer.echo("no labs")
        return
    typer.echo(f"{'LAB':<9} {'NODES':>5} {'PODS':>5} {'READY':>5}  SUPERVISOR")
    for name in labs:
        lab = Lab(name)
        try:
            state = lab.store.load()
        except StateError:
            typer.echo(f"{name:<9} {'?':>5} {'?':>5} {'?':>5}  leftover namespaces (run lab down)")
            continue
        plan = state.plan
        pid = state.supervisor_pid
        alive = f"pid {pid}" if pid and process_cmdline(pid) else "not running"
        nodes, pods = (len(plan.nodes), len(plan.pods)) if plan else (0, 0)
        typer.echo(f"{name:<9} {nodes:>5} {pods:>5} {len(lab.ready_pods()):>5}  {alive}")


def exec_command(
    target: TargetArgument,
    command: Annotated[list[str], typer.Argument(help="The command and its arguments (after --).")],
    namespace: NamespaceOption = "default",
    lab: LabOption = names.DEFAULT_LAB,
) -> None:
    """Run COMMAND inside TARGET's network namespace, with the pod's resolv.conf and hosts.

    Options go before TARGET: everything after it is the command (a leading `--` is dropped)."""
    argv = command[1:] if command[:1] == ["--"] else command
    if not argv:
        raise _fail("no command given after TARGET")
    try:
        done = _lab(lab).exec(_target(target, namespace), argv, capture=False, timeout=None)
    except (LabError, StateError) as err:
        raise _fail(str(err)) from None
    raise typer.Exit(done.returncode)


def curl(
    target: TargetArgument,
    url: Annotated[str, typer.Argument(help="http://HOST[:PORT]/PATH; HOST resolved with TARGET's DNS.")],
    namespace: NamespaceOption = "default",
    lab: LabOption = names.DEFAULT_LAB,
    timeout: Annotated[float, typer.Option(help="Seconds for resolving, connecting and reading.")] = 5.0,
) -> None:
    """GET URL from inside TARGET and print the body (for the echo: who answered and the client it saw)."""
    try:
        response = _lab(lab).http_request(_target(target, namespace), url, timeout)
    except (LabError, StateError, NameResolutionError, ResponseError, ValueError) as err:
        raise _fail(str(err)) from None
    except OSError as err:
        raise _fail(f"GET {url} from {target}: {err.strerror or err}") from None
    typer.echo(response.body.decode(errors="replace"), nl=False)
    if response.status != 200:
        raise _fail(f"HTTP {response.status}")
