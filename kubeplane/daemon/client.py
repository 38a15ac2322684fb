"""Finding and talking to a running daemon: its state file and a small blocking HTTP client.

`kubeplane up` writes /run/kubeplane/<lab>/daemon.json (pid, host, port) once its HTTP server listens and
removes it on exit; `apply`, `delete` and `get` read it to find the daemon. A state file whose pid is gone
(a daemon killed by SIGKILL) counts as no daemon. The client is synchronous (urllib): CLI commands make one
request and need no event loop.
"""

from __future__ import annotations

import json
import os
import urllib.error
import urllib.parse
import urllib.request
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from kubeplane.daemon.http import ChangeOutcome
from kubeplane.netns.names import state_dir

STATE_FILE_NAME = "daemon.json"
REQUEST_TIMEOUT_SECONDS = 30.0


class DaemonNotRunning(RuntimeError):
    """No daemon serves this lab (no state file, or its process is gone)."""


class DaemonRequestFailed(RuntimeError):
    """The daemon answered with an unexpected status, or could not be reached."""


class DaemonRejected(RuntimeError):
    """The daemon refused the manifests; the message is its one-line-per-error text."""

    def __init__(self, lines: tuple[str, ...]) -> None:
        self.lines = lines
        super().__init__("\n".join(lines))


@dataclass(frozen=True)
class DaemonEndpoint:
    lab: str
    pid: int
    host: str
    port: int

    @property
    def url(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"http://{host}:{self.port}"


def state_file(lab: str) -> Path:
    return state_dir(lab) / STATE_FILE_NAME


def write_state_file(endpoint: DaemonEndpoint) -> Path:
    """Publish where the daemon listens: written aside and renamed, so readers never see half a file."""
    path = state_file(endpoint.lab)
    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_suffix(".tmp")
    partial.write_text(json.dumps(asdict(endpoint)) + "\n")
    partial.replace(path)
    return path


def remove_state_file(lab: str, pid: int) -> None:
    """Remove the state file if it is still ours (a newer daemon for the same lab may have replaced it)."""
    path = state_file(lab)
    try:
        if json.loads(path.read_text()).get("pid") == pid:
            path.unlink()
    except (OSError, ValueError):
        return


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def find_daemon(lab: str) -> DaemonEndpoint:
    path = state_file(lab)
    try:
        fields = json.loads(path.read_text())
        endpoint = DaemonEndpoint(
            lab=str(fields["lab"]), pid=int(fields["pid"]), host=str(fields["host"]), port=int(fields["port"])
        )
    except FileNotFoundError:
        raise DaemonNotRunning(f"no daemon for lab {lab!r} (no {path})") from None
    except (OSError, ValueError, KeyError, TypeError) as err:
        raise DaemonNotRunning(f"no daemon for lab {lab!r} ({path} unreadable: {err})") from None
    if not _alive(endpoint.pid):
        raise DaemonNotRunning(f"no daemon for lab {lab!r} (pid {endpoint.pid} in {path} has exited)")
    return endpoint


class DaemonClient:
    """Blocking calls to one daemon's HTTP API."""

    def __init__(self, endpoint: DaemonEndpoint, timeout: float = REQUEST_TIMEOUT_SECONDS) -> None:
        self.endpoint = endpoint
        self.timeout = timeout

    @classmethod
    def for_lab(cls, lab: str) -> DaemonClient:
        return cls(find_daemon(lab))

    def _request(
        self, method: str, path: str, params: dict[str, str] | None = None, body: bytes | None = None
    ) -> tuple[int, bytes]:
        url = self.endpoint.url + path
        if params:
            url += "?" + urllib.parse.urlencode(params)
        request = urllib.request.Request(url, data=body, method=method)
        try:
            with urllib.request.urlopen(request, timeout=self.timeout) as response:
                return int(response.status), response.read()
        except urllib.error.HTTPError as err:
            return err.code, err.read()
        except (urllib.error.URLError, OSError) as err:
            raise DaemonRequestFailed(f"{method} {url}: {err}") from None

    def _expect_ok(self, method: str, path: str, status: int, body: bytes) -> bytes:
        if status != 200:
            text = body.decode(errors="replace").strip()
            raise DaemonRequestFailed(f"{method} {path}: HTTP {status}: {text}")
        return body

    def state(self) -> dict[str, Any]:
        status, body = self._request("GET", "/state")
        return dict(json.loads(self._expect_ok("GET", "/state", status, body)))

    def rules(self, node: str) -> str:
        status, body = self._request("GET", "/rules", {"node": node})
        return self._expect_ok("GET", "/rules", status, body).decode()

    def health(self, node: str | None = None, liveness: bool = False) -> tuple[bool, dict[str, Any]]:
        path = "/livez" if liveness else "/healthz"
        status, body = self._request("GET", path, {"node": node} if node else None)
        if status not in (200, 503):
            self._expect_ok("GET", path, status, body)
        return status == 200, dict(json.loads(body))

    def metrics(self) -> str:
        status, body = self._request("GET", "/metrics")
        return self._expect_ok("GET", "/metrics", status, body).decode()

    def _change(self, path: str, manifest_text: str, source_name: str) -> ChangeOutcome:
        status, body = self._request("POST", path, {"source": source_name}, manifest_text.encode())
        if status == 400:
            raise DaemonRejected(tuple(body.decode(errors="replace").strip().splitlines()))
        fields = json.loads(self._expect_ok("POST", path, status, body))
        return ChangeOutcome(version=int(fields["version"]), changes=tuple(fields["changes"]))

    def apply(self, manifest_text: str, source_name: str) -> ChangeOutcome:
        return self._change("/apply", manifest_text, source_name)

    def delete(self, manifest_text: str, source_name: str) -> ChangeOutcome:
        return self._change("/delete", manifest_text, source_name)


def running_state(lab: str) -> dict[str, Any] | None:
    """The objects a running daemon of `lab` serves (a `kind: List` of manifests), or None when none runs.

    For `kubeplane get`: read the live daemon when there is one, else fall back to the manifest files.
    Raises DaemonRequestFailed when a daemon is registered but does not answer properly."""
    try:
        client = DaemonClient.for_lab(lab)
    except DaemonNotRunning:
        return None
    return client.state()
