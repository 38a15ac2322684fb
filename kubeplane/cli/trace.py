"""`kubeplane trace`: explain a packet's path through one node's rules, or trace a real one through a lab.

    kubeplane trace -f cluster.yaml --node node-a --src 10.244.1.5 --dst 10.96.0.10:53/udp
    kubeplane trace -f cluster.yaml --node node-a --src 203.0.113.10 --dst 198.51.100.2:30080 -o json
    kubeplane trace --lab demo --from shop/client --to web.shop:80          (root, a running lab)

Explain (no root) walks the rules our iptables backend renders for the node (kubeplane.trace.cluster_trace);
its JSON is the contract documented in kubeplane.trace.result and docs/trace-json.md. Live (`--lab`) sends a
real packet, traces it with nftables and compares with explain (kubeplane.trace.live). `--mode ipvs`
explains with the IPVS backend's virtual servers, ipsets and iptables rules (the live trace follows
whatever the lab's nodes hold).
"""

from __future__ import annotations

import json
import os
from enum import StrEnum
from pathlib import Path
from typing import Annotated, NoReturn

import typer

from kubeplane.model.errors import ManifestError, ManifestErrors
from kubeplane.model.objects import Cluster
from kubeplane.proxy.plan import UnknownNodeError
from kubeplane.trace.cluster_trace import explain_in_cluster
from kubeplane.trace.explain import ExplainOptions, Mode
from kubeplane.trace.packet import DEFAULT_SOURCE_PORT, BadAddress, CtState, Packet, parse_endpoint
from kubeplane.trace.render_text import Level as TextLevel
from kubeplane.trace.render_text import render_text


class TraceMode(StrEnum):
    iptables = "iptables"
    ipvs = "ipvs"


class OutputFormat(StrEnum):
    text = "text"
    json = "json"


class Level(StrEnum):
    detailed = "detailed"
    summary = "summary"
    minimal = "minimal"


class ConntrackState(StrEnum):
    new = "new"
    established = "established"
    related = "related"
    invalid = "invalid"


CT_STATES: dict[ConntrackState, CtState] = {
    ConntrackState.new: "NEW",
    ConntrackState.established: "ESTABLISHED",
    ConntrackState.related: "RELATED",
    ConntrackState.invalid: "INVALID",
}
MODES: dict[TraceMode, Mode] = {TraceMode.iptables: "iptables", TraceMode.ipvs: "ipvs"}
LEVELS: dict[Level, TextLevel] = {
    Level.detailed: "detailed",
    Level.summary: "summary",
    Level.minimal: "minimal",
}

# Every kubeplane.trace error is a ValueError; the loader raises ManifestError(s) and OSError.
EXPLAIN_ERRORS = (OSError, ValueError, ManifestError, ManifestErrors, UnknownNodeError)


def register(app: typer.Typer) -> None:
    app.command("trace")(trace)


def trace(
    file: Annotated[
        list[Path] | None, typer.Option("-f", "--file", help="Manifest file or directory (repeatable).")
    ] = None,
    node: Annotated[str | None, typer.Option("--node", help="Node whose rules the packet crosses.")] = None,
    src: Annotated[
        str | None, typer.Option("--src", help="Source IP[:PORT] (port 40000 by default).")
    ] = None,
    dst: Annotated[str | None, typer.Option("--dst", help="Destination IP:PORT[/tcp|udp|sctp].")] = None,
    mode: Annotated[
        TraceMode, typer.Option("--mode", help="Proxy mode whose rules to walk.")
    ] = TraceMode.iptables,
    config: Annotated[
        Path | None, typer.Option("--config", help="File with a KubeProxyConfiguration.")
    ] = None,
    output: Annotated[OutputFormat, typer.Option("-o", "--output", help="text or json.")] = OutputFormat.text,
    level: Annotated[Level, typer.Option("--level", help="How much of the walk to show.")] = Level.detailed,
    ct: Annotated[
        ConntrackState, typer.Option("--ct", help="Conntrack state of the packet.")
    ] = ConntrackState.new,
    sticky_to: Annotated[
        str | None,
        typer.Option("--sticky-to", help="IP:PORT endpoint the source already has session affinity to."),
    ] = None,
    lab: Annotated[str | None, typer.Option("--lab", help="Live: trace a real packet in this lab.")] = None,
    from_: Annotated[
        str | None, typer.Option("--from", help="Live source: NAMESPACE/POD, POD, node/NODE or external.")
    ] = None,
    to: Annotated[
        str | None, typer.Option("--to", help="Live destination: NAME_OR_IP:PORT[/tcp|udp].")
    ] = None,
    timeout: Annotated[float, typer.Option("--timeout", help="Live: seconds to wait for an answer.")] = 2.0,
) -> None:
    """Explain how NODE's rules treat a packet from SRC to DST (every rule hit, rewrite and the verdict),
    or with --lab send a real one FROM a lab namespace TO a service and compare the kernel's trace with
    explain."""
    if lab is not None:
        _live(lab, from_, to, timeout, output)
        return
    if not file or node is None or src is None or dst is None:
        given = (("-f", file), ("--node", node), ("--src", src), ("--dst", dst))
        _fail(f"explain needs {', '.join(flag for flag, value in given if not value)}", code=2)
    try:
        packet = _packet(src, dst)
        cluster = _load([*file, *([config] if config else [])])
        options = ExplainOptions(ct_state=CT_STATES[ct], sticky_endpoint=sticky_to)
        explanation = explain_in_cluster(cluster, node, packet, options, MODES[mode])
    except EXPLAIN_ERRORS as error:
        _fail(str(error))
    if output == OutputFormat.json:
        typer.echo(json.dumps(explanation.to_json(), indent=2))
    else:
        typer.echo(render_text(explanation, LEVELS[level]), nl=False)


def _live(
    lab: str, source: str | None, destination: str | None, timeout: float, output: OutputFormat
) -> None:
    if source is None or destination is None:
        _fail("a live trace needs --from and --to", code=2)
    if os.geteuid() != 0:
        _fail("a live trace needs root (it enters the lab's network namespaces)")
    # Imported here: the live trace pulls in the lab (pyroute2, namespaces) that explain never needs.
    from kubeplane.trace.live import LiveTraceError, trace_live
    from kubeplane.trace.render_live import render_live_text

    try:
        result = trace_live(lab, source, destination, timeout)
    except (LiveTraceError, OSError, ValueError, RuntimeError) as error:
        _fail(str(error))
    if output == OutputFormat.json:
        typer.echo(json.dumps(result.to_json(), indent=2))
    else:
        typer.echo(render_live_text(result), nl=False)


def _packet(src: str, dst: str) -> Packet:
    if "/" in src:
        raise BadAddress(f"--src {src!r}: the protocol belongs to --dst")
    src_ip, src_port, _ = parse_endpoint(src, default_port=DEFAULT_SOURCE_PORT)
    dst_ip, dst_port, protocol = parse_endpoint(dst, default_port=None)
    if (":" in src_ip) != (":" in dst_ip):
        raise BadAddress(f"--src {src} and --dst {dst} are of different IP families")
    return Packet(src_ip, src_port, dst_ip, dst_port, protocol)


def _load(paths: list[Path]) -> Cluster:
    # Imported here, as the other commands do: the loader pulls in YAML parsing the rest does not need.
    from kubeplane.loader import load_cluster

    return load_cluster(paths).cluster


def _fail(message: str, code: int = 1) -> NoReturn:
    typer.echo(f"error: {message}", err=True)
    raise typer.Exit(code)
