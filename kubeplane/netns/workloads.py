"""The built-in pod workloads, served from one asyncio event loop for every pod of the lab.

Each listening socket is created inside its pod's namespace (nsfs.open_socket_in_netns) and then served by the
one loop, so a hundred pods cost one process. What a pod runs (see plan.Workload):

- `echo` (the default): on each TCP port an HTTP echo answering any request with JSON
  `{pod, namespace, node, podIP, port, client, method, path, host}` where `client` is the `ip:port` the server
  saw (`[ip]:port` for IPv6); a client whose first bytes are not an HTTP request line gets a plain echo
  instead. On each UDP port a UDP echo replying JSON `{pod, namespace, node, podIP, port, client, data}`.
- `tcp-echo`: plain echo on every TCP port (UDP ports as above).
- `command`: the annotation's argv under `ip netns exec <pod netns>` (so it sees the pod's resolv.conf).
  Ready once it has run for COMMAND_SETTLE_SECONDS (so a command that dies at once never flickers Ready) and,
  if the pod declares TCP ports, each accepts a connection (a tcpSocket probe); not ready once it exits.
- `none`: nothing runs; the pod counts as ready (it has nothing to wait for).

A pod is ready when every one of its listeners is open (built-in workloads) or its probe passes (commands).
Dual-stack pods (Workload.pod_ip6 set) get each built-in listener twice, on 0.0.0.0 and on [::]; `podIP` in a
reply is the pod's address of the family the request came in on.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import itertools
import json
import logging
import os
import re
import signal
import socket
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, cast

from kubeplane.netns.nsfs import in_netns, open_socket_in_netns
from kubeplane.netns.plan import Workload, WorkloadPort
from kubeplane.netns.state import CommandProcess

log = logging.getLogger(__name__)

_HTTP_REQUEST_LINE = re.compile(rb"^[A-Z]{3,8} \S+ HTTP/1\.[01]\r?\n")
_HTTP_METHOD_PREFIX = re.compile(rb"^[A-Z]{3,8} ")
MAX_HEADER_BYTES = 65536
PROBE_INTERVAL = 0.2
COMMAND_SETTLE_SECONDS = 0.5
STOP_GRACE_SECONDS = 2.0


def echo_identity(workload: Workload, port: int, client: tuple[str, int]) -> dict[str, Any]:
    """The fields every echo reply carries: who answered, and the client address it saw."""
    pod_ip = workload.pod_ip6 if workload.pod_ip6 and ":" in client[0] else workload.pod_ip
    return {
        "pod": workload.pod,
        "namespace": workload.namespace,
        "node": workload.node,
        "podIP": pod_ip,
        "port": port,
        "client": f"[{client[0]}]:{client[1]}" if ":" in client[0] else f"{client[0]}:{client[1]}",
    }


def _parse_head(head: bytes) -> tuple[str, str, str, dict[str, str]]:
    lines = head.decode("latin-1").split("\r\n")
    method, path, version = (lines[0].split(" ", 2) + ["", ""])[:3]
    headers: dict[str, str] = {}
    for line in lines[1:]:
        if ":" in line:
            key, value = line.split(":", 1)
            headers[key.strip().lower()] = value.strip()
    return method, path, version, headers


def _wants_close(version: str, headers: dict[str, str]) -> bool:
    connection = headers.get("connection", "").lower()
    if version == "HTTP/1.0":
        return connection != "keep-alive"
    return connection == "close"


async def _serve_http(
    reader: asyncio.StreamReader, writer: asyncio.StreamWriter, buffer: bytes, identity: dict[str, Any]
) -> None:
    while True:
        while b"\r\n\r\n" not in buffer:
            if len(buffer) > MAX_HEADER_BYTES:
                return
            chunk = await reader.read(65536)
            if not chunk:
                return
            buffer += chunk
        head, buffer = buffer.split(b"\r\n\r\n", 1)
        method, path, version, headers = _parse_head(head)
        body_length = int(headers.get("content-length", "0") or 0)
        while len(buffer) < body_length:
            chunk = await reader.read(65536)
            if not chunk:
                return
            buffer += chunk
        buffer = buffer[body_length:]
        body = json.dumps({**identity, "method": method, "path": path, "host": headers.get("host", "")})
        close = _wants_close(version, headers)
        payload = body.encode() + b"\n"
        response_head = (
            f"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: {len(payload)}\r\n"
            f"Connection: {'close' if close else 'keep-alive'}\r\n\r\n"
        )
        writer.write(response_head.encode() + (b"" if method == "HEAD" else payload))
        await writer.drain()
        if close:
            return


async def _serve_echo(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, first: bytes) -> None:
    data = first
    while data:
        writer.write(data)
        await writer.drain()
        data = await reader.read(65536)


def echo_stream_handler(
    workload: Workload, port: int, http: bool
) -> Callable[[asyncio.StreamReader, asyncio.StreamWriter], Any]:
    """The connection handler for one TCP port: HTTP echo (when `http` and the client speaks HTTP), else a
    plain echo. Usable with any asyncio.start_server, which is how unit tests drive it on loopback."""

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        peer = writer.get_extra_info("peername")
        try:
            first = await reader.read(65536)
            # Wait for a whole request line when the first segment starts like an HTTP method.
            while http and _HTTP_METHOD_PREFIX.match(first) and b"\n" not in first and len(first) < 8192:
                more = await reader.read(65536)
                if not more:
                    break
                first += more
            if http and _HTTP_REQUEST_LINE.match(first):
                await _serve_http(reader, writer, first, echo_identity(workload, port, peer))
            else:
                await _serve_echo(reader, writer, first)
        except (ConnectionError, asyncio.IncompleteReadError):
            pass
        finally:
            writer.close()
            with contextlib.suppress(ConnectionError):
                await writer.wait_closed()

    return handle


class _UdpEcho(asyncio.DatagramProtocol):
    def __init__(self, workload: Workload, port: int) -> None:
        self.workload = workload
        self.port = port
        self.transport: asyncio.DatagramTransport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.DatagramTransport, transport)

    def datagram_received(self, data: bytes, addr: tuple[str, int]) -> None:
        reply = {**echo_identity(self.workload, self.port, addr), "data": data.decode(errors="replace")}
        if self.transport is not None:
            self.transport.sendto(json.dumps(reply).encode(), addr)


def _tcp_probe(workload: Workload, port: WorkloadPort) -> bool:
    def connect() -> bool:
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
            sock.settimeout(0.5)
            try:
                sock.connect((workload.pod_ip, port.port))
            except OSError:
                return False
            return True

    return in_netns(workload.netns, connect)


class WorkloadEngine:
    """Serves a set of workloads on the running event loop; the supervisor process and the daemon share it.

    `update` replaces the set: workloads that are gone or changed are stopped, new or changed ones started,
    unchanged ones keep serving. `on_change` is called (on the loop) whenever the set of ready pods or of
    command processes changes."""

    def __init__(
        self,
        workloads: Sequence[Workload] = (),
        on_change: Callable[[WorkloadEngine], None] | None = None,
        log_dir: Path | None = None,
    ) -> None:
        self.workloads = tuple(workloads)
        self.on_change = on_change
        self.log_dir = log_dir
        self._running: dict[str, Workload] = {}
        self._listeners: dict[str, list[asyncio.AbstractServer | asyncio.BaseTransport]] = {}
        self._processes: dict[str, tuple[asyncio.subprocess.Process, tuple[str, ...]]] = {}
        self._started_at: dict[str, float] = {}
        self._ready: set[str] = set()
        self._probe_task: asyncio.Task[None] | None = None

    @property
    def ready_pods(self) -> frozenset[str]:
        """`namespace/pod` keys whose workload is serving."""
        return frozenset(self._ready)

    @property
    def commands(self) -> tuple[CommandProcess, ...]:
        return tuple(CommandProcess(proc.pid, argv) for proc, argv in self._processes.values())

    def _changed(self) -> None:
        if self.on_change is not None:
            self.on_change(self)

    async def _open_listeners(self, workload: Workload) -> bool:
        loop = asyncio.get_running_loop()
        listeners = self._listeners.setdefault(workload.key, [])
        families = [(socket.AF_INET, "0.0.0.0")]
        if workload.pod_ip6:
            families.append((socket.AF_INET6, "::"))
        for port, (family, wildcard) in itertools.product(workload.ports, families):
            try:
                if port.protocol == "UDP":
                    sock = open_socket_in_netns(
                        workload.netns, family, socket.SOCK_DGRAM, (wildcard, port.port)
                    )
                    transport, _ = await loop.create_datagram_endpoint(
                        functools.partial(_UdpEcho, workload, port.port), sock=sock
                    )
                    listeners.append(transport)
                else:
                    sock = open_socket_in_netns(
                        workload.netns, family, socket.SOCK_STREAM, (wildcard, port.port)
                    )
                    handler = echo_stream_handler(workload, port.port, http=workload.kind == "echo")
                    listeners.append(await asyncio.start_server(handler, sock=sock, backlog=512))
            except OSError as err:
                log.error(
                    "workload listen failed pod=%s port=%s/%s error=%s",
                    workload.key,
                    port.port,
                    port.protocol,
                    err,
                )
                return False
        return True

    async def _start_command(self, workload: Workload) -> None:
        argv = workload.command
        output: int | Any = asyncio.subprocess.DEVNULL
        if self.log_dir is not None:
            self.log_dir.mkdir(parents=True, exist_ok=True)
            output = open(self.log_dir / f"{workload.namespace}_{workload.pod}.log", "ab")  # noqa: SIM115
        try:
            proc = await asyncio.create_subprocess_exec(
                "ip",
                "netns",
                "exec",
                workload.netns,
                *argv,
                stdin=asyncio.subprocess.DEVNULL,
                stdout=output,
                stderr=output,
                start_new_session=True,
            )
        except OSError as err:
            log.error("workload command failed pod=%s argv=%s error=%s", workload.key, argv, err)
            return
        finally:
            if not isinstance(output, int):
                output.close()
        self._processes[workload.key] = (proc, argv)
        self._started_at[workload.key] = time.monotonic()
        log.info("workload command started pod=%s pid=%d", workload.key, proc.pid)
        self._changed()  # publish the pid at once: `lab down` after a kill -9 of this process needs it

    async def _start_one(self, workload: Workload) -> None:
        self._running[workload.key] = workload
        if workload.kind == "none":
            self._ready.add(workload.key)
        elif workload.kind == "command":
            await self._start_command(workload)
        elif await self._open_listeners(workload):
            self._ready.add(workload.key)

    async def _stop_one(self, key: str) -> None:
        self._running.pop(key, None)
        self._ready.discard(key)
        listeners = self._listeners.pop(key, [])
        for listener in listeners:
            listener.close()
        if key in self._processes:
            proc, _ = self._processes.pop(key)
            self._started_at.pop(key, None)
            await _end_process(proc)
        for listener in listeners:
            if isinstance(listener, asyncio.AbstractServer):
                await listener.wait_closed()

    async def start(self) -> None:
        """Serve the workloads given at construction; returns once built-in workloads listen."""
        await self.update(self.workloads)

    async def update(self, workloads: Sequence[Workload]) -> None:
        """Serve exactly `workloads` from now on (see the class docstring)."""
        wanted = {w.key: w for w in workloads}
        self.workloads = tuple(workloads)
        for key in [k for k, w in self._running.items() if wanted.get(k) != w]:
            await self._stop_one(key)
        for key, workload in wanted.items():
            if key not in self._running:
                await self._start_one(workload)
        if self._processes and self._probe_task is None:
            self._probe_task = asyncio.get_running_loop().create_task(self._probe_commands())
        self._changed()

    def _command_ready(self, workload: Workload) -> bool:
        entry = self._processes.get(workload.key)
        if entry is None or entry[0].returncode is not None:
            return False
        if time.monotonic() - self._started_at.get(workload.key, 0.0) < COMMAND_SETTLE_SECONDS:
            return False
        return all(_tcp_probe(workload, p) for p in workload.ports if p.protocol == "TCP")

    async def _probe_commands(self) -> None:
        while True:
            changed = False
            for key in list(self._processes):
                workload = self._running.get(key)
                if workload is None:
                    continue
                ready = await asyncio.to_thread(self._command_ready, workload)
                if key in self._processes and ready != (key in self._ready):
                    changed = True
                    (self._ready.add if ready else self._ready.discard)(key)
            if changed:
                self._changed()
            await asyncio.sleep(PROBE_INTERVAL)

    async def stop(self) -> None:
        """Close every listener and end every command (SIGTERM, then SIGKILL after a grace period)."""
        if self._probe_task is not None:
            self._probe_task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._probe_task
            self._probe_task = None
        for key in list(self._running):
            await self._stop_one(key)


async def _end_process(proc: asyncio.subprocess.Process) -> None:
    """SIGTERM the command's process group, SIGKILL it after STOP_GRACE_SECONDS."""
    if proc.returncode is None:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGTERM)
    try:
        await asyncio.wait_for(proc.wait(), STOP_GRACE_SECONDS)
    except TimeoutError:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)
        await proc.wait()
