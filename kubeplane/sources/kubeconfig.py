"""Read a kubeconfig file into what an HTTP client needs: server URL, TLS context and auth header.

Only what kube-proxy's own client uses is supported: the current (or a named) context; the cluster's
`certificate-authority` / `certificate-authority-data` / `insecure-skip-tls-verify` / `tls-server-name`; the
user's `token` / `tokenFile` and `client-certificate(-data)` + `client-key(-data)`. Relative file paths are
resolved against the kubeconfig's directory, as kubectl does. Exec and auth-provider plugins are refused
with a clear error rather than silently connecting anonymously.
"""

from __future__ import annotations

import base64
import os
import ssl
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml


class KubeconfigError(ValueError):
    """The kubeconfig cannot be used: one line naming the file and the entry at fault."""


@dataclass(frozen=True)
class ApiCredentials:
    """How to reach and authenticate to one API server."""

    server: str
    ca_pem: bytes | None = None
    insecure_skip_tls_verify: bool = False
    tls_server_name: str | None = None
    token: str | None = None
    client_cert_pem: bytes | None = None
    client_key_pem: bytes | None = None

    def headers(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.token}"} if self.token else {}

    def ssl_context(self) -> ssl.SSLContext | None:
        """The TLS context for an https server (None for plain http)."""
        if not self.server.startswith("https://"):
            return None
        context = ssl.create_default_context()
        if self.insecure_skip_tls_verify:
            context.check_hostname = False
            context.verify_mode = ssl.CERT_NONE
        elif self.ca_pem is not None:
            context.load_verify_locations(cadata=self.ca_pem.decode())
        if self.client_cert_pem is not None and self.client_key_pem is not None:
            _load_client_pair(context, self.client_cert_pem, self.client_key_pem)
        return context


def _load_client_pair(context: ssl.SSLContext, cert_pem: bytes, key_pem: bytes) -> None:
    """ssl only loads a key pair from files: write them to a private temporary directory just long enough."""
    with tempfile.TemporaryDirectory(prefix="kubeplane-kubeconfig-") as directory:
        cert_path, key_path = Path(directory, "client.crt"), Path(directory, "client.key")
        for path, data in ((cert_path, cert_pem), (key_path, key_pem)):
            descriptor = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
            with os.fdopen(descriptor, "wb") as handle:
                handle.write(data)
        context.load_cert_chain(str(cert_path), str(key_path))


def _named(entries: Any, name: str, section: str, file: str) -> dict[str, Any]:
    for entry in entries or ():
        if isinstance(entry, dict) and entry.get("name") == name:
            body = entry.get(section.rstrip("s"), {})
            return body if isinstance(body, dict) else {}
    raise KubeconfigError(f"{file}: {section}: no entry named {name!r}")


def _data_or_file(body: dict[str, Any], key: str, base: Path, file: str, where: str) -> bytes | None:
    """`<key>-data` (base64) wins over `<key>` (a path), like client-go."""
    data = body.get(f"{key}-data")
    if data:
        try:
            return base64.b64decode(data, validate=True)
        except ValueError as err:
            raise KubeconfigError(f"{file}: {where}: {key}-data: not valid base64") from err
    path = body.get(key)
    if not path:
        return None
    resolved = base / path
    try:
        return resolved.read_bytes()
    except OSError as err:
        raise KubeconfigError(f"{file}: {where}: {key}: cannot read {resolved}: {err.strerror}") from err


def load_kubeconfig(path: str | Path, context: str | None = None) -> ApiCredentials:
    """Credentials of `context` (default: current-context) in the kubeconfig at `path`."""
    file = str(path)
    try:
        config = yaml.safe_load(Path(path).read_text())
    except OSError as err:
        raise KubeconfigError(f"{file}: cannot read: {err.strerror}") from err
    except yaml.YAMLError as err:
        raise KubeconfigError(f"{file}: not YAML: {str(err).splitlines()[0]}") from err
    if not isinstance(config, dict):
        raise KubeconfigError(f"{file}: not a kubeconfig (expected a mapping)")
    context_name = context or config.get("current-context")
    if not context_name:
        raise KubeconfigError(f"{file}: current-context: not set and no --context given")
    context_body = _named(config.get("contexts"), context_name, "contexts", file)
    cluster_name, user_name = context_body.get("cluster"), context_body.get("user")
    if not cluster_name:
        raise KubeconfigError(f"{file}: contexts[{context_name}].cluster: missing")
    cluster = _named(config.get("clusters"), cluster_name, "clusters", file)
    user = _named(config.get("users"), user_name, "users", file) if user_name else {}
    server = cluster.get("server")
    if not server:
        raise KubeconfigError(f"{file}: clusters[{cluster_name}].server: missing")
    if "exec" in user or "auth-provider" in user:
        raise KubeconfigError(f"{file}: users[{user_name}]: exec and auth-provider plugins are not supported")
    base = Path(path).resolve().parent
    token = user.get("token")
    token_file = user.get("tokenFile")
    if not token and token_file:
        try:
            token = (base / token_file).read_text().strip()
        except OSError as err:
            where = f"{file}: users[{user_name}].tokenFile"
            raise KubeconfigError(f"{where}: cannot read: {err.strerror}") from err
    cert = _data_or_file(user, "client-certificate", base, file, f"users[{user_name}]")
    key = _data_or_file(user, "client-key", base, file, f"users[{user_name}]")
    if (cert is None) != (key is None):
        raise KubeconfigError(f"{file}: users[{user_name}]: client-certificate and client-key go together")
    return ApiCredentials(
        server=str(server).rstrip("/"),
        ca_pem=_data_or_file(cluster, "certificate-authority", base, file, f"clusters[{cluster_name}]"),
        insecure_skip_tls_verify=bool(cluster.get("insecure-skip-tls-verify", False)),
        tls_server_name=cluster.get("tls-server-name"),
        token=token or None,
        client_cert_pem=cert,
        client_key_pem=key,
    )
