"""Entry point of the `kubeplane` command: builds the typer app from the command modules."""

from __future__ import annotations

import typer

app = typer.Typer(
    name="kubeplane",
    help="The Kubernetes service data plane (kube-proxy and cluster DNS), emulated in network namespaces.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
)

# Each command module registers its commands here (one line each).
