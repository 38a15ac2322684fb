"""The packet-life example end to end: kubeplane up on examples/packet-life, a DNS lookup traced live to the
DNS pod, `curl web` traced by name, and the teacher's demo script itself."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
from pathlib import Path

import pytest

import kubeplane
from kubeplane.daemon.app import Daemon, DaemonOptions
from kubeplane.testing import skip_unless_root, unique_lab_name
from kubeplane.trace.live import LiveTrace, trace_live

pytestmark = pytest.mark.root

EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "packet-life"
WEB_NAME = "web.demo.svc.cluster.local"


async def traces_in_a_running_cluster(lab: str) -> tuple[LiveTrace, LiveTrace, str]:
    async with Daemon(DaemonOptions(paths=(EXAMPLE,), lab=lab)) as daemon:
        await daemon.wait_programmed(daemon.store.version, timeout=30)
        web = next(s for s in daemon.store.cluster.services if s.meta.key == "demo/web")
        dns = await asyncio.to_thread(trace_live, lab, "demo/client", "10.96.0.10:53/udp", 2.0, WEB_NAME)
        curl = await asyncio.to_thread(trace_live, lab, "demo/client", "web:80")
        return dns, curl, web.cluster_ip or ""


def test_dns_lookup_reaches_the_dns_pod_and_curl_web_reaches_a_web_pod() -> None:
    skip_unless_root()
    dns, curl, web_ip = asyncio.run(traces_in_a_running_cluster(unique_lab_name()))
    assert dns.disagreements == ()
    assert dns.delivered_to is not None and dns.delivered_to.pod == "kube-system/coredns"
    assert dns.probe.detail == f"DNS answer: {WEB_NAME}. A {web_ip}"
    assert curl.disagreements == ()
    assert curl.flow.destination_name == "web" and curl.flow.packet.dst == web_ip
    assert curl.delivered_to is not None and curl.delivered_to.pod in ("demo/web-1", "demo/web-2")


def test_the_demo_script_runs_every_step_and_finds_agreement() -> None:
    skip_unless_root()
    lab = unique_lab_name()
    repository = str(Path(kubeplane.__file__).resolve().parents[1])
    result = subprocess.run(
        [sys.executable, str(EXAMPLE / "packet_life.py"), "--lab", lab],
        capture_output=True,
        text=True,
        timeout=120,
        env={**os.environ, "PYTHONPATH": repository},
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.count("the kernel and explain agree") == 3
    assert "probe: delivered to kube-system/coredns" in result.stdout
    assert not any(
        lab in line
        for line in subprocess.run(
            ["ip", "netns", "list"], capture_output=True, text=True
        ).stdout.splitlines()
    )
