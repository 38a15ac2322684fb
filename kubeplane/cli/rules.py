"""`kubeplane rules`: print the proxy rules one node would get, without root and without a lab.

The output is iptables-save text (filter then nat, as kube-proxy writes them), so a user can diff it
against `iptables-save` on a real node. Dual-stack clusters get a second block, marked by an
`# ip6tables` comment line, for the IPv6 tables. `--mode ipvs` prints the IPVS backend's view instead
(kubeplane.proxy.ipvs.render_text): ipvsadm -Ln, ipset save and its iptables rules.
"""

from __future__ import annotations

from enum import StrEnum
from pathlib import Path
from typing import Annotated

import typer

from kubeplane.model.errors import ManifestError, ManifestErrors
from kubeplane.proxy.iptables.render import render_iptables
from kubeplane.proxy.plan import UnknownNodeError, plan_node


class RulesMode(StrEnum):
    iptables = "iptables"
    ipvs = "ipvs"


def register(app: typer.Typer) -> None:
    app.command("rules")(rules)


def rules(
    file: Annotated[
        list[Path], typer.Option("-f", "--file", help="Manifest file or directory (repeatable).")
    ],
    node: Annotated[str, typer.Option("--node", help="Node whose rules to print.")],
    mode: Annotated[
        RulesMode | None,
        typer.Option("--mode", help="Proxy mode to render (default: the KubeProxyConfiguration's mode)."),
    ] = None,
    config: Annotated[
        Path | None, typer.Option("--config", help="File with a KubeProxyConfiguration.")
    ] = None,
) -> None:
    """Print the rules NODE gets: iptables-save text, or for ipvs the virtual servers, ipsets and rules."""
    # Imported here: the loader belongs to the model layer and pulls in YAML parsing that the rest of
    # this module does not need.
    from kubeplane.loader import load_cluster

    paths = [*file, *([config] if config else [])]
    try:
        cluster = load_cluster(paths).cluster
        plan = plan_node(cluster, node)
    except (OSError, ValueError, ManifestError, ManifestErrors, UnknownNodeError) as err:
        typer.echo(f"error: {err}", err=True)
        raise typer.Exit(1) from None
    chosen = mode.value if mode is not None else cluster.proxy_config.mode
    if chosen == "ipvs":
        from kubeplane.proxy.ipvs.render_text import render_ipvs_text

        typer.echo(render_ipvs_text(plan, cluster.proxy_config.ipvs_scheduler), nl=False)
        return
    if chosen != "iptables":
        typer.echo(f"error: proxy mode {chosen!r} is not supported (use --mode iptables or ipvs)", err=True)
        raise typer.Exit(1)
    typer.echo(render_iptables(plan, "IPv4").text, nl=False)
    if plan.ports_for("IPv6"):
        typer.echo("# ip6tables")
        typer.echo(render_iptables(plan, "IPv6").text, nl=False)
