"""`kubeplane dns`: serve the cluster zone built from manifests, or answer one question from it offline."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Coroutine
from pathlib import Path
from typing import Annotated, Any

import dnslib
import typer

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
    file: FileOption,
    listen: Annotated[str, typer.Option(help="host:port for UDP and TCP.")] = "127.0.0.1:5353",
    upstream: Annotated[
        list[str] | None, typer.Option(help="Upstream resolver ip[:port]; repeatable. Default: from config.")
    ] = None,
) -> None:
    """Serve cluster DNS on LISTEN, rebuilding the zone whenever the manifests under FILE change."""
    try:
        host, port = parse_listen(listen)
        for address in upstream or ():
            parse_upstream(address)
    except (ListenAddressError, UpstreamAddressError) as error:
        raise typer.BadParameter(str(error)) from error
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s %(message)s")
    store = ClusterStore()
    source = ManifestSource([file], store)
    source.load()
    if store.version == 0 and source.errors:
        for problem in source.errors:
            typer.echo(f"error: {problem}", err=True)
        raise typer.Exit(1)
    _run(_serve(store, source, host, port, upstream or None))


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
    store: ClusterStore, source: ManifestSource, host: str, port: int, upstreams: list[str] | None
) -> None:
    """Serve and follow the store: every accepted change set updates the records it touches; refused edits
    keep the last good zone."""
    server = DnsServer(store.cluster, upstreams=upstreams)
    await server.start(host, port)
    changes = store.subscribe()
    watcher = asyncio.create_task(source.watch())
    try:
        while True:
            await server.apply(await changes.get())
    finally:
        watcher.cancel()
        store.unsubscribe(changes)
        await server.stop()


def _run(main: Coroutine[Any, Any, None]) -> None:
    try:
        asyncio.run(main)
    except KeyboardInterrupt:
        log.info("dns server stopped")
