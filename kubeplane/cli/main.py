"""Entry point of the `kubeplane` command: builds the typer app from the command modules."""

from __future__ import annotations

import typer

from kubeplane.cli import daemon, dns, lab, manifests, rules, trace

app = typer.Typer(
    name="kubeplane",
    help="The Kubernetes service data plane (kube-proxy and cluster DNS), emulated in network namespaces.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
)

for command_module in (manifests, lab, rules, dns, trace, daemon):
    command_module.register(app)
