"""`kubeplane validate` and `kubeplane get`: check manifests, and show them as kubectl would after defaulting.

Both load files through `kubeplane.loader.load_cluster`, so what `get` prints (allocated clusterIPs and
nodePorts, placed pods, derived EndpointSlices) is exactly what the proxy and DNS would be given; `get`
without -f lists what the running `kubeplane up` of a lab serves, read over its API. Bad input is reported
one line per problem on stderr with exit status 1, never as a traceback.
"""

from __future__ import annotations

import json
from collections import Counter
from enum import StrEnum
from pathlib import Path
from typing import Annotated

import typer
import yaml

from kubeplane.cli.columns import RESOURCES_BY_NAME, Resource, render_table
from kubeplane.loader import LoadedCluster, load_cluster
from kubeplane.model.errors import ManifestErrors
from kubeplane.model.objects import Cluster, KubeObject
from kubeplane.model.parse import parse_text
from kubeplane.model.parse_meta import DEFAULT_NAMESPACE
from kubeplane.model.serialize import to_list_manifest
from kubeplane.netns.names import DEFAULT_LAB

FilesOption = Annotated[
    list[Path], typer.Option("-f", "--filename", help="Manifest file or directory (repeatable).")
]


class OutputFormat(StrEnum):
    wide = "wide"
    yaml = "yaml"
    json = "json"


def register(app: typer.Typer) -> None:
    app.command("validate")(validate)
    app.command("get")(get)


def validate(files: FilesOption) -> None:
    """Check manifests like the API server would; exit 1 with one line per problem."""
    loaded = _load_or_exit(files)
    cluster = loaded.cluster
    counts = Counter(type(obj).__name__ for obj in _all_objects(cluster))
    summary = ", ".join(f"{count} {kind}{'' if count == 1 else 's'}" for kind, count in counts.items())
    typer.echo(f"valid: {len(loaded.files)} files: {summary}")


def get(
    resource: Annotated[str, typer.Argument(help="services|svc, endpointslices, pods|po, nodes|no")],
    files: Annotated[
        list[Path] | None,
        typer.Option("-f", "--filename", help="Manifest file or directory; default: the running daemon's."),
    ] = None,
    namespace: Annotated[
        str, typer.Option("-n", "--namespace", help="Namespace to list.")
    ] = DEFAULT_NAMESPACE,
    all_namespaces: Annotated[
        bool, typer.Option("-A", "--all-namespaces", help="List every namespace.")
    ] = False,
    output: Annotated[OutputFormat | None, typer.Option("-o", "--output", help="wide, yaml or json.")] = None,
    lab: Annotated[str, typer.Option("--name", "--lab", help="Lab whose daemon to read (without -f).")] = (
        DEFAULT_LAB
    ),
) -> None:
    """List objects after defaulting and allocation, with kubectl's columns: those of FILES, or those the
    running `kubeplane up` of the lab serves."""
    kind = RESOURCES_BY_NAME.get(resource.lower())
    if kind is None:
        names = ", ".join(sorted(RESOURCES_BY_NAME))
        raise typer.BadParameter(f"unknown resource {resource!r} (one of {names})", param_hint="RESOURCE")
    cluster = _load_or_exit(files).cluster if files else _daemon_cluster_or_exit(lab)
    objects = [
        obj
        for obj in _objects_of(cluster, kind)
        if all_namespaces or not kind.namespaced or obj.meta.namespace == namespace
    ]
    if output is OutputFormat.yaml:
        typer.echo(yaml.safe_dump(to_list_manifest(objects), sort_keys=False), nl=False)
        return
    if output is OutputFormat.json:
        typer.echo(json.dumps(to_list_manifest(objects), indent=4))
        return
    if not objects:
        where = "" if all_namespaces or not kind.namespaced else f" in {namespace} namespace"
        typer.echo(f"No resources found{where}.", err=True)
        return
    typer.echo(
        _table(kind, objects, with_namespace=all_namespaces and kind.namespaced, wide=output is not None)
    )


def _table(kind: Resource, objects: list[KubeObject], with_namespace: bool, wide: bool) -> str:
    headers: tuple[str, ...] = (("NAMESPACE",) if with_namespace else ()) + kind.headers
    if wide:
        headers += kind.wide_headers
    rows = [headers]
    for obj in objects:
        row: tuple[str, ...] = (obj.meta.namespace,) if with_namespace else ()
        row += kind.row(obj)
        if wide and kind.wide_row is not None:
            row += kind.wide_row(obj)
        rows.append(row)
    return render_table(rows)


def _objects_of(cluster: Cluster, kind: Resource) -> tuple[KubeObject, ...]:
    by_plural: dict[str, tuple[KubeObject, ...]] = {
        "services": cluster.services,
        "endpointslices": cluster.endpoint_slices,
        "pods": cluster.pods,
        "nodes": cluster.nodes,
    }
    return tuple(sorted(by_plural[kind.plural], key=lambda o: (o.meta.namespace, o.meta.name)))


def _all_objects(cluster: Cluster) -> tuple[KubeObject, ...]:
    return (
        *cluster.services,
        *cluster.endpoint_slices,
        *cluster.pods,
        *cluster.nodes,
        *cluster.namespaces,
        *cluster.service_cidrs,
    )


def _daemon_cluster_or_exit(lab: str) -> Cluster:
    """The objects the running daemon of `lab` serves (already completed by it), read over its API."""
    from kubeplane.daemon.client import DaemonRequestFailed, running_state  # aiohttp: only when needed
    from kubeplane.sources.kubernetes import assemble_cluster

    try:
        state = running_state(lab)
    except DaemonRequestFailed as err:
        typer.echo(str(err), err=True)
        raise typer.Exit(1) from None
    if state is None:
        typer.echo(f"no -f given and no daemon runs for lab {lab!r} (start one: kubeplane up)", err=True)
        raise typer.Exit(1)
    return assemble_cluster(parse_text(yaml.safe_dump_all(state["items"]), f"daemon of lab {lab}").objects)


def _load_or_exit(files: list[Path]) -> LoadedCluster:
    try:
        loaded = load_cluster(files)
    except ManifestErrors as err:
        for error in err.errors:
            typer.echo(str(error), err=True)
        raise typer.Exit(1) from None
    for warning in loaded.warnings:
        typer.echo(f"warning: {warning}", err=True)
    return loaded
