"""Kubeconfig reading, and the API source over TLS with the kubeconfig's CA and client certificate."""

from __future__ import annotations

import asyncio
import base64
import contextlib
import ssl
import subprocess
from collections.abc import Mapping
from pathlib import Path

import aiohttp
import pytest
import yaml
from aiohttp import web

from kubeplane.sources.kubeconfig import ApiCredentials, KubeconfigError, load_kubeconfig


def _write_kubeconfig(path: Path, cluster: Mapping[str, object], user: Mapping[str, object]) -> Path:
    config = {
        "apiVersion": "v1",
        "kind": "Config",
        "current-context": "lab",
        "contexts": [{"name": "lab", "context": {"cluster": "c", "user": "u"}}],
        "clusters": [{"name": "c", "cluster": dict(cluster)}],
        "users": [{"name": "u", "user": dict(user)}],
    }
    path.write_text(yaml.safe_dump(config))
    return path


def test_token_and_server_come_from_the_current_context(tmp_path: Path) -> None:
    path = _write_kubeconfig(tmp_path / "kc", {"server": "https://10.0.0.1:6443/"}, {"token": "abc"})
    credentials = load_kubeconfig(path)
    assert credentials.server == "https://10.0.0.1:6443"
    assert credentials.headers() == {"Authorization": "Bearer abc"}


def test_token_file_is_resolved_relative_to_the_kubeconfig(tmp_path: Path) -> None:
    (tmp_path / "token").write_text("from-file\n")
    path = _write_kubeconfig(tmp_path / "kc", {"server": "https://h"}, {"tokenFile": "token"})
    assert load_kubeconfig(path).token == "from-file"


def test_certificate_data_wins_over_file_path(tmp_path: Path) -> None:
    data = base64.b64encode(b"PEM-A").decode()
    cluster = {"server": "https://h", "certificate-authority-data": data, "certificate-authority": "missing"}
    path = _write_kubeconfig(tmp_path / "kc", cluster, {})
    assert load_kubeconfig(path).ca_pem == b"PEM-A"


@pytest.mark.parametrize(
    ("cluster", "user", "message"),
    [
        ({}, {}, "clusters[c].server: missing"),
        ({"server": "https://h"}, {"exec": {"command": "aws"}}, "users[u]: exec and auth-provider"),
        (
            {"server": "https://h", "certificate-authority": "nope.crt"},
            {},
            "certificate-authority: cannot read",
        ),
        ({"server": "https://h"}, {"client-certificate-data": "UEVN"}, "client-certificate and client-key"),
    ],
)
def test_unusable_kubeconfig_is_one_line_naming_file_and_entry(
    tmp_path: Path, cluster: dict[str, object], user: dict[str, object], message: str
) -> None:
    path = _write_kubeconfig(tmp_path / "kc", cluster, user)
    with pytest.raises(KubeconfigError) as caught:
        load_kubeconfig(path)
    assert message in str(caught.value)
    assert str(path) in str(caught.value)
    assert "\n" not in str(caught.value)


def test_unknown_context_is_reported(tmp_path: Path) -> None:
    path = _write_kubeconfig(tmp_path / "kc", {"server": "https://h"}, {})
    with pytest.raises(KubeconfigError, match="contexts: no entry named 'other'"):
        load_kubeconfig(path, context="other")


# --- TLS against a local server that requires a client certificate ---------------------------------------


def _openssl(*args: str, cwd: Path) -> None:
    subprocess.run(["openssl", *args], cwd=cwd, check=True, capture_output=True)


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A CA, a server certificate for 127.0.0.1 and a client certificate, all signed by the CA."""
    directory = tmp_path_factory.mktemp("pki")
    _openssl("req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", "ca.key", "-out", "ca.crt",
             "-days", "1", "-subj", "/CN=test-ca", cwd=directory)  # fmt: skip
    for name, extension in (
        ("server", "subjectAltName=IP:127.0.0.1"),
        ("client", "extendedKeyUsage=clientAuth"),
    ):
        _openssl("req", "-newkey", "rsa:2048", "-nodes", "-keyout", f"{name}.key", "-out", f"{name}.csr",
                 "-subj", f"/CN={name}", cwd=directory)  # fmt: skip
        (directory / f"{name}.ext").write_text(extension + "\n")
        _openssl("x509", "-req", "-in", f"{name}.csr", "-CA", "ca.crt", "-CAkey", "ca.key", "-CAcreateserial",
                 "-out", f"{name}.crt", "-days", "1", "-extfile", f"{name}.ext", cwd=directory)  # fmt: skip
    return directory


@contextlib.asynccontextmanager
async def _tls_server(pki: Path):  # type: ignore[no-untyped-def]
    async def namespaces(_: web.Request) -> web.Response:
        return web.json_response({"kind": "NamespaceList", "metadata": {"resourceVersion": "5"}, "items": []})

    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(pki / "server.crt", pki / "server.key")
    context.load_verify_locations(pki / "ca.crt")
    context.verify_mode = ssl.CERT_REQUIRED
    app = web.Application()
    app.router.add_get("/api/v1/namespaces", namespaces)
    runner = web.AppRunner(app, handle_signals=False, shutdown_timeout=0.5)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0, ssl_context=context)
    await site.start()
    port = runner.addresses[0][1]
    try:
        yield f"https://127.0.0.1:{port}"
    finally:
        await runner.cleanup()


def _context(credentials: ApiCredentials) -> ssl.SSLContext:
    context = credentials.ssl_context()
    assert context is not None
    return context


async def test_client_certificate_and_ca_from_kubeconfig_data_authenticate(pki: Path, tmp_path: Path) -> None:
    def b64(name: str) -> str:
        return base64.b64encode((pki / name).read_bytes()).decode()

    async with _tls_server(pki) as url:
        user = {"client-certificate-data": b64("client.crt"), "client-key-data": b64("client.key")}
        cluster = {"server": url, "certificate-authority-data": b64("ca.crt")}
        credentials = load_kubeconfig(_write_kubeconfig(tmp_path / "kc", cluster, user))
        async with aiohttp.ClientSession() as session:
            async with session.get(url + "/api/v1/namespaces", ssl=_context(credentials)) as response:
                assert (await response.json())["metadata"]["resourceVersion"] == "5"
            anonymous = load_kubeconfig(_write_kubeconfig(tmp_path / "kc2", cluster, {}))
            with pytest.raises(aiohttp.ClientError):
                async with asyncio.timeout(5):
                    await (await session.get(url + "/api/v1/namespaces", ssl=_context(anonymous))).read()
            untrusted = load_kubeconfig(_write_kubeconfig(tmp_path / "kc3", {"server": url}, user))
            with pytest.raises(aiohttp.ClientConnectorCertificateError):
                await session.get(url + "/api/v1/namespaces", ssl=_context(untrusted))
