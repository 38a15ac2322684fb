"""Workload kinds, readiness, command processes, and the engine the daemon embeds."""

from __future__ import annotations

import asyncio
import os
import signal
import socket
import time

import pytest

from kubeplane.model.objects import Cluster
from kubeplane.netns.demo_cluster import demo_cluster, demo_pod
from kubeplane.netns.lab import Lab
from kubeplane.netns.nsfs import open_socket_in_netns
from kubeplane.netns.ready import mark_ready
from kubeplane.netns.state import process_cmdline
from kubeplane.netns.workloads import WorkloadEngine

pytestmark = pytest.mark.root

COMMAND = '["socat", "TCP-LISTEN:9000,fork,reuseaddr", "EXEC:cat"]'


def _cluster() -> Cluster:
    base = demo_cluster(nodes=2, pods_per_node=1)
    extra = (
        demo_pod("socat", 1, 10, ports=((9000, "TCP"),), annotations={"kubeplane.dev/command": COMMAND}),
        demo_pod("sleeper", 2, 10, ports=(), annotations={"kubeplane.dev/command": "sleep 600"}),
        demo_pod("quiet", 2, 11, annotations={"kubeplane.dev/workload": "none"}),
        demo_pod("raw", 2, 12, ports=((7000, "TCP"),), annotations={"kubeplane.dev/workload": "tcp-echo"}),
    )
    return Cluster(nodes=base.nodes, pods=(*base.pods, *extra))


def _wait_gone(pid: int, timeout: float = 5.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if not process_cmdline(pid):
            return True
        time.sleep(0.05)
    return False


def test_command_workload_serves_and_becomes_ready_when_its_port_accepts(lab_factory) -> None:
    lab: Lab = lab_factory(_cluster())
    lab.wait_ready(["default/socat", "default/sleeper"], timeout=10)
    assert lab.tcp_connect("default/echo-2-0", "10.244.1.10", 9000, b"through socat\n") == b"through socat\n"
    resolv = lab.exec("default/socat", ["cat", "/etc/resolv.conf"]).stdout
    assert resolv.startswith("search default.svc.cluster.local")


def test_none_workload_listens_nowhere_and_tcp_echo_does_not_speak_http(lab_factory) -> None:
    lab: Lab = lab_factory(_cluster())
    assert "default/quiet" in lab.ready_pods()
    with pytest.raises(ConnectionRefusedError):
        lab.tcp_connect("default/echo-1-0", "10.244.2.11", 8080)
    request = b"GET / HTTP/1.1\r\nHost: x\r\n\r\n"
    assert lab.tcp_connect("default/echo-1-0", "10.244.2.12", 7000, request) == request


def test_mark_ready_follows_the_workloads_that_serve(lab_factory) -> None:
    cluster = _cluster()
    broken = demo_pod("broken", 1, 20, ports=(), annotations={"kubeplane.dev/command": "false"})
    cluster = Cluster(nodes=cluster.nodes, pods=(*cluster.pods, broken))
    lab: Lab = lab_factory(cluster)
    lab.wait_ready(["default/socat", "default/sleeper"], timeout=10)
    ready = {p.meta.name: p.ready for p in mark_ready(cluster, lab.ready_pods()).pods}
    assert ready == {
        "echo-1-0": True,
        "echo-2-0": True,
        "socat": True,
        "sleeper": True,
        "quiet": True,
        "raw": True,
        "broken": False,
    }


def test_down_after_supervisor_kill_9_also_stops_its_commands(lab_factory) -> None:
    lab: Lab = lab_factory(_cluster())
    lab.wait_ready(["default/socat", "default/sleeper"], timeout=10)
    commands = lab.readiness().commands
    assert {c.argv[0] for c in commands} == {"socat", "sleep"}
    supervisor = lab.store.load().supervisor_pid
    assert supervisor is not None
    os.kill(supervisor, signal.SIGKILL)
    assert all(process_cmdline(c.pid) == c.argv for c in commands)  # orphans now
    Lab(lab.name).down()
    assert all(_wait_gone(c.pid) for c in commands)


def test_engine_serves_a_lab_without_supervisor_from_the_callers_event_loop(lab_factory) -> None:
    cluster = demo_cluster(nodes=2, pods_per_node=1)
    lab: Lab = lab_factory(cluster, workloads=False)
    assert lab.ready_pods() == frozenset()
    with pytest.raises(ConnectionRefusedError):
        lab.tcp_connect("default/echo-1-0", "10.244.2.2", 8080)

    async def run() -> tuple[frozenset[str], dict, bytes]:
        engine = WorkloadEngine([p.workload for p in lab.plan.pods])
        await engine.start()
        # A DNS-style extra socket in a pod's namespace, served from the same loop.
        sock = open_socket_in_netns(
            lab.pod_netns("default", "echo-2-0"), socket.AF_INET, socket.SOCK_DGRAM, ("0.0.0.0", 53)
        )
        loop = asyncio.get_running_loop()

        class Answer(asyncio.DatagramProtocol):
            def connection_made(self, transport):  # type: ignore[no-untyped-def]
                self.transport = transport

            def datagram_received(self, data: bytes, addr: tuple[str, int]) -> None:
                self.transport.sendto(data.upper(), addr)

        transport, _ = await loop.create_datagram_endpoint(Answer, sock=sock)
        try:
            reply = await asyncio.to_thread(lab.http_get, "default/echo-1-0", "http://10.244.2.2:8080/")

            def ask() -> bytes:
                return lab.tcp_connect("default/echo-1-0", "10.244.2.2", 8080, b"x\n")

            await asyncio.to_thread(ask)
            upper = await asyncio.to_thread(_udp_roundtrip, lab, "10.244.2.2", 53)
            return engine.ready_pods, reply, upper
        finally:
            transport.close()
            await engine.stop()

    ready, reply, upper = asyncio.run(run())
    assert ready == {"default/echo-1-0", "default/echo-2-0"}
    assert reply["client"].split(":")[0] == "10.244.1.2"
    assert upper == b"HELLO"


def _udp_roundtrip(lab: Lab, ip: str, port: int) -> bytes:
    from kubeplane.netns.nsfs import in_netns

    def run() -> bytes:
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
            sock.settimeout(2)
            sock.sendto(b"hello", (ip, port))
            return sock.recv(100)

    return in_netns(lab.pod_netns("default", "echo-1-0"), run)
