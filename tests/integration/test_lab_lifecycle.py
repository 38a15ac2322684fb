"""Up, down, crash recovery, and the files a pod sees through `exec`."""

from __future__ import annotations

import os
import signal
import subprocess

import pytest

from kubeplane.model.objects import KubeplaneConfiguration
from kubeplane.netns import names
from kubeplane.netns.demo_cluster import demo_cluster, demo_pod
from kubeplane.netns.lab import Lab, LabError, list_labs
from kubeplane.netns.state import process_cmdline
from kubeplane.testing import unique_lab_name

pytestmark = pytest.mark.root


def _leftovers(lab: str) -> list[str]:
    prefix = names.lab_prefix(lab)
    netns = subprocess.run(["ip", "netns", "list"], capture_output=True, text=True, check=True).stdout
    found = [line.split()[0] for line in netns.splitlines() if line.startswith(prefix)]
    found += [str(p) for p in names.ETC_NETNS_DIR.glob(f"{prefix}*")]
    if names.state_dir(lab).exists():
        found.append(str(names.state_dir(lab)))
    return found


def test_exec_in_a_pod_sees_kubelet_style_resolv_conf_and_hosts(lab_factory) -> None:
    cluster = demo_cluster(nodes=1, pods_per_node=0)
    pod = demo_pod("web-1", 1, 7, namespace="shop")
    config = KubeplaneConfiguration(cluster_domain="corp.local", dns_service_ip="10.96.0.53")
    lab: Lab = lab_factory(cluster.__class__(nodes=cluster.nodes, pods=(pod,), kubeplane_config=config))
    resolv = lab.exec("shop/web-1", ["cat", "/etc/resolv.conf"])
    assert resolv.returncode == 0, resolv.stderr
    assert resolv.stdout.splitlines() == [
        "search shop.svc.corp.local svc.corp.local corp.local",
        "nameserver 10.96.0.53",
        "options ndots:5",
    ]
    hosts = lab.exec("shop/web-1", ["cat", "/etc/hosts"]).stdout.splitlines()
    assert hosts[-1] == "10.244.1.7\tweb-1"
    addresses = lab.exec("shop/web-1", ["ip", "-o", "-4", "addr", "show", "dev", "eth0"]).stdout
    assert "10.244.1.7/32" in addresses


def test_down_after_kill_9_of_the_supervisor_leaves_nothing_behind() -> None:
    if os.geteuid() != 0:
        pytest.skip("needs root")
    lab = Lab(unique_lab_name())
    cluster = demo_cluster(nodes=2, pods_per_node=2)
    try:
        lab.up(cluster)
        pid = lab.store.load().supervisor_pid
        assert pid is not None and process_cmdline(pid)
        os.kill(pid, signal.SIGKILL)
        os.waitpid(pid, 0)
        assert _leftovers(lab.name)
        report = Lab(lab.name).down()  # a fresh handle, as `kubeplane lab down` in another process would
        assert report.netnses_removed == 2 + 2 + 4  # underlay, external, two nodes, four pods
    finally:
        Lab(lab.name).down()
    assert _leftovers(lab.name) == []
    assert lab.name not in list_labs()


def test_down_sweeps_lab_namespaces_that_state_never_recorded() -> None:
    if os.geteuid() != 0:
        pytest.skip("needs root")
    name = unique_lab_name()
    stray = f"{names.lab_prefix(name)}stray"
    subprocess.run(["ip", "netns", "add", stray], check=True)
    try:
        assert name in list_labs()
        assert Lab(name).down().netnses_removed == 1
    finally:
        subprocess.run(["ip", "netns", "del", stray], capture_output=True)
    assert _leftovers(name) == []


def test_up_refuses_a_lab_that_is_already_up_and_keeps_it_working(lab_factory) -> None:
    lab: Lab = lab_factory(demo_cluster(nodes=1, pods_per_node=1))
    with pytest.raises(LabError, match="already up"):
        Lab(lab.name).up(demo_cluster(nodes=1, pods_per_node=1))
    assert lab.http_get("node/node-1", "http://10.244.1.2:8080/")["pod"] == "echo-1-0"


def test_failed_up_removes_what_it_built() -> None:
    if os.geteuid() != 0:
        pytest.skip("needs root")
    # No supervisor starts serving within a zero timeout, so `up` fails after building the topology.
    lab = Lab(unique_lab_name())
    try:
        with pytest.raises(LabError, match="not serving"):
            lab.up(demo_cluster(nodes=2, pods_per_node=2), ready_timeout=0.0)
    finally:
        Lab(lab.name).down()
    assert _leftovers(lab.name) == []
