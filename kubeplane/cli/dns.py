"""`kubeplane dns`: serve the cluster zone built from manifests or read from a real API server, or answer one
question from manifests offline."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Coroutine
from pathlib import Path
from typing import Annotated, Any

import dnslib
import typer

from kubeplane.daemon.cluster_dns import follow_store_for_dns
from kubeplane.dns.forward import UpstreamAddressError, parse_upstream
from kubeplane.dns.lookup import REFUSED, lookup
from kubeplane.dns.server import DnsServer
from kubeplane.dns.wire import pack_reply
from kubeplane.dns.zone import build_zone
from kubeplane.loader import load_cluster
from kubeplane.model.errors import ManifestErrors
from kubeplane.sources.manifests import ManifestSource
from kubeplane.store import ClusterStore

log = logging.getLogger(__name__)

FileOption = Annotated[Path, typer.Option("-f", "--file", help="Manifest file or directory.", exists=True)]


class ListenAddressError(ValueError):
    """A --listen value that is not host:port or [ipv6]:port."""


def register(app: typer.Typer) -> None:
    dns_app = typer.Typer(help="Cluster DNS built from manifests.", no_args_is_help=True)
    dns_app.command("serve")(serve)
    dns_app.command("query")(query)
    app.add_typer(dns_app, name="dns")


def serve(
    file: Annotated[
        Path | None, typer.Option("-f", "--file", help="Manifest file or directory.", exists=True)
    ] = None,
    kubeconfig: Annotated[
        Path | None,
        typer.Option(
            "--kubeconfig",
            help="Serve a real cluster's names, list+watched from its API server.",
            exists=True,
        ),
    ] = None,
    context: Annotated[str | None, typer.Option("--context", help="Kubeconfig context.")] = None,
    listen: Annotated[str, typer.Option(help="host:port for UDP and TCP.")] = "127.0.0.1:5353",
    upstream: Annotated[
        list[str] | None, typer.Option(help="Upstream resolver ip[:port]; repeatable. Default: from config.")
    ] = None,
) -> None:
    """Serve cluster DNS on LISTEN for the manifests under FILE (followed as they change) or for the cluster
    of KUBECONFIG (Services, EndpointSlices, Namespaces and Pods, as CoreDNS's kubernetes plugin watches)."""
    if (file is None) == (kubeconfig is None):
        raise typer.BadParameter("give exactly one of -f PATH and --kubeconfig FILE")
    try:
        host, port = parse_listen(listen)
        for address in upstream or ():
            parse_upstream(address)
    except (ListenAddressError, UpstreamAddressError) as error:
        raise typer.BadParameter(str(error)) from error
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s %(message)s")
    store = ClusterStore()
    if kubeconfig is not None:
        feed = _api_feed(kubeconfig, context, store)
    elif file is not None:
        feed = _manifests_feed(file, store)
    _run(_serve(store, feed, host, port, upstream or None))


def _manifests_feed(file: Path, store: ClusterStore) -> Coroutine[Any, Any, None]:
    """Load FILE into `store` now (exit on errors: there is no last good state yet), then watch it."""
    source = ManifestSource([file], store)
    source.load()
    if store.version == 0 and source.errors:
        for problem in source.errors:
            typer.echo(f"error: {problem}", err=True)
        raise typer.Exit(1)
    return source.watch()


def _api_feed(kubeconfig: Path, context: str | None, store: ClusterStore) -> Coroutine[Any, Any, None]:
    """List+watch the API server of KUBECONFIG into `store`; the zone is empty until the first list is in."""
    from kubeplane.sources.kubeconfig import KubeconfigError, load_kubeconfig  # aiohttp: only when needed
    from kubeplane.sources.kubernetes import CORE_RESOURCES, KubernetesSource, store_publisher

    try:
        credentials = load_kubeconfig(kubeconfig, context)
    except KubeconfigError as error:
        typer.echo(f"error: {error}", err=True)
        raise typer.Exit(1) from None
    resources = tuple(r for r in CORE_RESOURCES if r.kind != "Node")  # DNS needs no nodes
    return KubernetesSource(credentials, store_publisher(store), resources).run()


def query(
    file: FileOption,
    name: Annotated[str, typer.Argument(help="The name to look up.")],
    qtype: Annotated[str, typer.Argument(help="A, AAAA, SRV, PTR, TXT, NS, SOA, CNAME or ANY.")] = "A",
) -> None:
    """Answer NAME from the zone built from FILE, without a socket, printed like dig."""
    type_code = dnslib.QTYPE.reverse.get(qtype.upper())
    if type_code is None:
        raise typer.BadParameter(f"unknown record type {qtype!r}", param_hint="TYPE")
    qname = name if name.endswith(".") else name + "."
    try:
        cluster = load_cluster([file]).cluster
    except ManifestErrors as error:
        typer.echo(f"error: {error}", err=True)
        raise typer.Exit(1) from error
    question = dnslib.DNSRecord.question(qname, qtype.upper())
    answer = lookup(build_zone(cluster), qname, type_code)
    if answer is None:
        reply = question.reply(ra=0, aa=0)
        reply.header.rcode = REFUSED
        typer.echo(f";; {qname} is outside the cluster domain; `dns serve` forwards such names")
    else:
        reply = pack_reply(question, answer)
    typer.echo(str(reply))


def parse_listen(text: str) -> tuple[str, int]:
    """`host:port` or `[ipv6]:port`."""
    if text.startswith("["):
        host, _, rest = text[1:].partition("]")
        port = rest[1:] if rest.startswith(":") else ""
    else:
        host, _, port = text.rpartition(":")
    if not host or not port.isdigit() or not 0 <= int(port) < 65536:
        raise ListenAddressError(f"listen address {text!r}: expected host:port")
    return host, int(port)


async def _serve(
    store: ClusterStore, feed: Coroutine[Any, Any, None], host: str, port: int, upstreams: list[str] | None
) -> None:
    """Serve and follow the store: every accepted change set updates the records it touches; refused edits
    keep the last good zone."""
    server = DnsServer(store.cluster, upstreams=upstreams)
    await server.start(host, port)
    watcher = asyncio.create_task(feed)  # runs once the follower below has subscribed
    try:
        await follow_store_for_dns(store, server, published=lambda _version: None)
    finally:
        watcher.cancel()
        await server.stop()


def _run(main: Coroutine[Any, Any, None]) -> None:
    try:
        asyncio.run(main)
    except KeyboardInterrupt:
        log.info("dns server stopped")
