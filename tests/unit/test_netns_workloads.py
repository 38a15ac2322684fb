"""The echo workloads' protocol, driven over loopback (no namespaces needed)."""

from __future__ import annotations

import asyncio
import json

from kubeplane.netns.plan import Workload, WorkloadPort
from kubeplane.netns.workloads import echo_stream_handler

WORKLOAD = Workload(
    "shop", "web-1", "node-1", "kp-x-shop-web-1", "10.244.1.2", "echo", (WorkloadPort(80, "TCP"),)
)


async def _exchange(
    http: bool, payload: bytes, read_until_close: bool = True
) -> tuple[bytes, tuple[str, int]]:
    server = await asyncio.start_server(echo_stream_handler(WORKLOAD, 80, http), "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    local = writer.get_extra_info("sockname")
    writer.write(payload)
    await writer.drain()
    if read_until_close:
        data = await asyncio.wait_for(reader.read(), 5)
    else:
        data = await asyncio.wait_for(reader.read(len(payload)), 5)
    writer.close()
    server.close()
    await server.wait_closed()
    return data, local


async def test_http_echo_answers_json_naming_the_pod_and_the_client_it_saw() -> None:
    data, local = await _exchange(True, b"GET /where?x=1 HTTP/1.1\r\nHost: web\r\nConnection: close\r\n\r\n")
    head, body = data.split(b"\r\n\r\n", 1)
    assert head.startswith(b"HTTP/1.1 200 OK")
    assert json.loads(body) == {
        "pod": "web-1",
        "namespace": "shop",
        "node": "node-1",
        "podIP": "10.244.1.2",
        "port": 80,
        "client": f"{local[0]}:{local[1]}",
        "method": "GET",
        "path": "/where?x=1",
        "host": "web",
    }


async def test_http_echo_keeps_the_connection_for_several_requests() -> None:
    request = b"GET /a HTTP/1.1\r\nHost: web\r\n\r\n"
    last = b"POST /b HTTP/1.1\r\nHost: web\r\nContent-Length: 3\r\nConnection: close\r\n\r\nabc"
    data, _ = await _exchange(True, request + last)
    assert data.count(b"HTTP/1.1 200 OK") == 2
    assert b'"path": "/b"' in data and b'"method": "POST"' in data


async def test_a_client_that_does_not_speak_http_gets_its_bytes_back() -> None:
    data, _ = await _exchange(True, b"hello\n", read_until_close=False)
    assert data == b"hello\n"


async def test_tcp_echo_mode_echoes_even_http_requests() -> None:
    request = b"GET / HTTP/1.1\r\n\r\n"
    data, _ = await _exchange(False, request, read_until_close=False)
    assert data == request
