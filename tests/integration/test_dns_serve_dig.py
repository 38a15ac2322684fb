"""`kubeplane dns serve` as a real process on loopback, queried with dig: UDP, TCP, truncation, reloads,
forwarding to another `dns serve` acting as the upstream."""

from __future__ import annotations

import asyncio
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import dns.message
import dns.query
import dnslib
import pytest

from kubeplane.dns.fake_upstream import FakeUpstream
from kubeplane.dns.server import DnsServer
from kubeplane.model.objects import Cluster, KubeplaneConfiguration
from kubeplane.netns.nsfs import create_netns, open_socket_in_netns, remove_netns
from kubeplane.netns.run import run_in_netns
from kubeplane.testing import free_port, unique_lab_name
from tests.unit.test_sources_kubernetes import FakeApiServer, running

pytestmark = pytest.mark.root

CLI = "import typer; from kubeplane.cli.dns import register; app = typer.Typer(); register(app); app()"
REPO = Path(__file__).resolve().parents[2]
STARTUP_SECONDS = 20.0
RELOAD_SECONDS = 10.0

NAMESPACE_AND_WEB = """\
apiVersion: v1
kind: Namespace
metadata: {name: shop}
---
apiVersion: v1
kind: Service
metadata: {name: web, namespace: shop}
spec:
  clusterIP: 10.96.0.20
  ports: [{name: http, port: 80}]
---
apiVersion: kubeplane.dev/v1alpha1
kind: KubeplaneConfiguration
clusterDomain: DOMAIN
"""


def headless_with_endpoints(count: int) -> str:
    endpoints = "\n".join(f"  - addresses: [10.244.1.{i + 1}]" for i in range(count))
    return f"""\
---
apiVersion: v1
kind: Service
metadata: {{name: many, namespace: shop}}
spec:
  clusterIP: None
  ports: [{{name: http, port: 8080}}]
---
apiVersion: discovery.k8s.io/v1
kind: EndpointSlice
metadata:
  name: many-1
  namespace: shop
  labels: {{kubernetes.io/service-name: many}}
addressType: IPv4
ports: [{{name: http, port: 8080, protocol: TCP}}]
endpoints:
{endpoints}
"""


def write_manifests(directory: Path, domain: str = "cluster.local", extra: str = "") -> Path:
    directory.mkdir(parents=True, exist_ok=True)
    (directory / "cluster.yaml").write_text(NAMESPACE_AND_WEB.replace("DOMAIN", domain) + extra)
    return directory


def dig(port: int, *args: str) -> str:
    argv = ["dig", "@127.0.0.1", "-p", str(port), "+time=2", "+tries=1", *args]
    return subprocess.run(argv, capture_output=True, text=True, timeout=30).stdout


def answers(port: int, *args: str) -> list[str]:
    """The answer section's data fields (last column) of a dig query."""
    return [line.split()[-1] for line in dig(port, "+noall", "+answer", *args).splitlines() if line.strip()]


@contextmanager
def dns_serve(manifests: Path, *extra: str, domain: str = "cluster.local") -> Iterator[int]:
    """Run `kubeplane dns serve` on a free loopback port until the block ends; yields the port."""
    port = free_port()
    argv = [sys.executable, "-c", CLI, "dns", "serve", "-f", str(manifests), "--listen", f"127.0.0.1:{port}"]
    process = subprocess.Popen([*argv, *extra], cwd=REPO, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        deadline = time.monotonic() + STARTUP_SECONDS
        while "1.1.0" not in dig(port, "+short", f"dns-version.{domain}", "TXT"):
            if process.poll() is not None or time.monotonic() > deadline:
                process.kill()
                _, stderr = process.communicate(timeout=10)
                raise AssertionError(f"dns serve did not come up: {stderr.decode()}")
            time.sleep(0.2)
        yield port
    finally:
        process.terminate()
        try:
            process.communicate(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.communicate()


def wait_for_answer(port: int, expected: list[str], *args: str) -> list[str]:
    deadline = time.monotonic() + RELOAD_SECONDS
    got = answers(port, *args)
    while got != expected and time.monotonic() < deadline:
        time.sleep(0.2)
        got = answers(port, *args)
    return got


def test_dig_resolves_service_over_udp_and_tcp(tmp_path: Path) -> None:
    with dns_serve(write_manifests(tmp_path)) as port:
        over_udp = answers(port, "Web.Shop.svc.cluster.local")
        over_tcp = answers(port, "+tcp", "web.shop.svc.cluster.local")
        echoed = dig(port, "+noall", "+answer", "Web.Shop.svc.cluster.local")
    assert over_udp == over_tcp == ["10.96.0.20"]
    assert echoed.startswith("Web.Shop.svc.cluster.local.")


def test_dig_srv_ptr_and_nxdomain_with_soa(tmp_path: Path) -> None:
    with dns_serve(write_manifests(tmp_path)) as port:
        srv = dig(port, "+noall", "+answer", "_http._tcp.web.shop.svc.cluster.local", "SRV")
        ptr = answers(port, "-x", "10.96.0.20")
        missing = dig(port, "nope.shop.svc.cluster.local")
    assert srv.split()[-4:] == ["0", "100", "80", "web.shop.svc.cluster.local."]
    assert ptr == ["web.shop.svc.cluster.local."]
    assert "status: NXDOMAIN" in missing
    assert "cluster.local.\t\t5\tIN\tSOA\tns.dns.cluster.local. hostmaster.cluster.local." in missing


def test_large_answer_is_truncated_over_udp_and_complete_over_tcp(tmp_path: Path) -> None:
    with dns_serve(write_manifests(tmp_path, extra=headless_with_endpoints(60))) as port:
        udp_only = dig(port, "+noedns", "+ignore", "many.shop.svc.cluster.local")
        retried = dig(port, "+noedns", "+noall", "+answer", "+comments", "many.shop.svc.cluster.local")
    assert "flags: qr aa tc" in udp_only
    assert "Truncated, retrying in TCP mode." in retried
    addresses = [line.split()[-1] for line in retried.splitlines() if "\tIN\tA\t" in line]
    assert sorted(addresses) == sorted(f"10.244.1.{i + 1}" for i in range(60))


def test_edited_manifests_are_served_and_broken_edit_keeps_last_zone(tmp_path: Path) -> None:
    manifests = write_manifests(tmp_path)
    with dns_serve(manifests) as port:
        assert answers(port, "many.shop.svc.cluster.local") == []
        write_manifests(manifests, extra=headless_with_endpoints(2))
        added = wait_for_answer(port, ["10.244.1.1", "10.244.1.2"], "many.shop.svc.cluster.local")
        (manifests / "cluster.yaml").write_text("kind: [this is not a manifest\n")
        time.sleep(1.0)
        kept = answers(port, "web.shop.svc.cluster.local")
    assert added == ["10.244.1.1", "10.244.1.2"]
    assert kept == ["10.96.0.20"]


def test_outside_names_are_forwarded_to_the_upstream(tmp_path: Path) -> None:
    upstream_manifests = write_manifests(tmp_path / "upstream", domain="corp.example")
    with (
        dns_serve(upstream_manifests, domain="corp.example") as upstream_port,
        dns_serve(write_manifests(tmp_path / "main"), "--upstream", f"127.0.0.1:{upstream_port}") as port,
    ):
        forwarded = answers(port, "web.shop.svc.corp.example")
        local = answers(port, "web.shop.svc.cluster.local")
    assert forwarded == ["10.96.0.20"]
    assert local == ["10.96.0.20"]


def test_dead_upstream_gives_servfail_and_no_upstream_refused(tmp_path: Path) -> None:
    dead = free_port()
    with dns_serve(write_manifests(tmp_path / "a"), "--upstream", f"127.0.0.1:{dead}") as port:
        servfail = dig(port, "www.example.com")
    with dns_serve(write_manifests(tmp_path / "b")) as port:
        refused = dig(port, "www.example.com")
    assert "status: SERVFAIL" in servfail
    assert "status: REFUSED" in refused


class _Upstream(asyncio.DatagramProtocol):
    """FakeUpstream's answers on a socket the test opened (inside a namespace)."""

    def __init__(self, upstream: FakeUpstream) -> None:
        self.upstream = upstream
        self.transport: asyncio.DatagramTransport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def datagram_received(self, data: bytes, addr: tuple[str | int, ...]) -> None:
        assert self.transport is not None
        self.transport.sendto(self.upstream.reply_for(dnslib.DNSRecord.parse(data), "udp"), addr)


async def test_server_listening_in_a_namespace_forwards_from_that_namespace() -> None:
    """The upstream listens on 127.0.0.1 of a namespace the test process is not in: only sockets opened in
    that namespace reach it, as only the DNS pod reaches a resolver on its own loopback."""
    netns = f"kpt-dns-{unique_lab_name()}"
    create_netns([netns])
    try:
        run_in_netns(netns, ["ip", "link", "set", "lo", "up"])
        upstream = FakeUpstream({"api.payments.example.": ("203.0.113.80",)})
        upstream_sock = open_socket_in_netns(netns, socket.AF_INET, socket.SOCK_DGRAM, ("127.0.0.1", 10053))
        transport, _ = await asyncio.get_running_loop().create_datagram_endpoint(
            lambda: _Upstream(upstream), sock=upstream_sock
        )
        config = KubeplaneConfiguration(upstream_resolvers=("127.0.0.1:10053",))
        server = DnsServer(Cluster(kubeplane_config=config), forward_timeout=1.0)
        udp = open_socket_in_netns(netns, socket.AF_INET, socket.SOCK_DGRAM, ("127.0.0.1", 53))
        tcp = open_socket_in_netns(netns, socket.AF_INET, socket.SOCK_STREAM, ("127.0.0.1", 53))
        await server.start(udp_sock=udp, tcp_sock=tcp)
        try:
            client = open_socket_in_netns(netns, socket.AF_INET, socket.SOCK_DGRAM)
            client.setblocking(True)
            query = dns.message.make_query("api.payments.example.", "A")
            reply = await asyncio.to_thread(dns.query.udp, query, "127.0.0.1", 2.0, 53, sock=client)
            client.close()
        finally:
            await server.stop()
            transport.close()
    finally:
        remove_netns(netns)
    assert [rr.address for rr in reply.answer[0]] == ["203.0.113.80"]
    assert [q.qname for q in upstream.received] == ["api.payments.example."]


async def test_kubeconfig_source_serves_the_api_servers_names_and_follows_its_watch(tmp_path: Path) -> None:
    api = FakeApiServer(token="s3cret")
    api.put("/api/v1/namespaces", {"metadata": {"name": "shop"}})
    web = {
        "metadata": {"name": "web", "namespace": "shop"},
        "spec": {"clusterIP": "10.96.0.20", "clusterIPs": ["10.96.0.20"], "ports": [{"port": 80}]},
    }
    api.put("/api/v1/services", web)
    async with running(api):
        kubeconfig = tmp_path / "kubeconfig"
        kubeconfig.write_text(
            "apiVersion: v1\nkind: Config\ncurrent-context: c\n"
            "contexts: [{name: c, context: {cluster: k, user: u}}]\n"
            f"clusters: [{{name: k, cluster: {{server: '{api.url}'}}}}]\n"
            "users: [{name: u, user: {token: s3cret}}]\n"
        )
        port = free_port()
        argv = ["dns", "serve", "--kubeconfig", str(kubeconfig), "--listen", f"127.0.0.1:{port}"]
        process = await asyncio.create_subprocess_exec(
            sys.executable, "-c", CLI, *argv, cwd=REPO, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
        )
        try:
            name, address = "web.shop.svc.cluster.local", ["10.96.0.20"]
            assert await asyncio.to_thread(wait_for_answer, port, address, name, "A") == address
            api.put("/api/v1/services", {**web, "metadata": {"name": "api", "namespace": "shop"}})
            api.delete("/api/v1/services", web)
            added = "api.shop.svc.cluster.local"
            assert await asyncio.to_thread(wait_for_answer, port, address, added, "A") == address
            assert "status: NXDOMAIN" in await asyncio.to_thread(dig, port, name, "A")
            assert api.watches, "the server never watched"
        finally:
            process.terminate()
            try:
                await asyncio.wait_for(process.wait(), 10)
            except TimeoutError:
                process.kill()
                await process.wait()
