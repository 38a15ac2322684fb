"""Changing an up lab pod by pod: new pods get namespaces and workloads, gone ones leave nothing behind."""

from __future__ import annotations

import subprocess
from dataclasses import replace

import pytest

from kubeplane.model.objects import Cluster, LoadBalancerIngress, ObjectMeta, Service
from kubeplane.netns import names
from kubeplane.netns.demo_cluster import demo_cluster, demo_pod
from kubeplane.netns.lab import Lab, LabError
from kubeplane.netns.nsfs import netns_exists

pytestmark = pytest.mark.root


def test_apply_adds_removes_and_rewires_pods_and_keeps_the_rest_serving(lab_factory) -> None:
    base = demo_cluster(nodes=2, pods_per_node=2)
    lab: Lab = lab_factory(base)
    keep, moved = base.pods[0], base.pods[1]
    moved_to = replace(moved, node_name="node-2", pod_ips=("10.244.2.40",))
    new = demo_pod("late", 1, 30)
    cluster = Cluster(nodes=base.nodes, pods=(keep, moved_to, base.pods[3], new))

    report = lab.apply(cluster)

    assert sorted(report.removed) == ["default/echo-1-1", "default/echo-2-0"]
    assert sorted(report.added) == ["default/echo-1-1", "default/late"]
    assert not netns_exists(names.pod_netns(lab.name, "default", "echo-2-0"))
    assert not (names.etc_netns_dir(names.pod_netns(lab.name, "default", "echo-2-0"))).exists()
    assert lab.http_get("default/echo-1-0", "http://10.244.1.30:8080/")["pod"] == "late"
    moved_reply = lab.http_get("default/echo-1-0", "http://10.244.2.40:8080/")
    assert (moved_reply["pod"], moved_reply["node"]) == ("echo-1-1", "node-2")
    with pytest.raises(OSError):
        lab.tcp_connect("default/echo-1-0", "10.244.2.2", 8080, timeout=0.5)  # the removed pod's IP
    assert lab.ready_pods() == {"default/echo-1-0", "default/echo-1-1", "default/echo-2-1", "default/late"}
    assert Lab(lab.name).plan == lab.plan  # state follows


def test_apply_changes_a_pods_workload_without_touching_its_namespace(lab_factory) -> None:
    base = demo_cluster(nodes=1, pods_per_node=1)
    lab: Lab = lab_factory(base)
    pod = base.pods[0]
    quiet = replace(pod, meta=replace(pod.meta, annotations={"kubeplane.dev/workload": "tcp-echo"}))
    report = lab.apply(replace(base, pods=(quiet,)))
    assert report == type(report)((), ())
    request = b"GET / HTTP/1.1\r\n\r\n"
    assert lab.tcp_connect("node/node-1", "10.244.1.2", 8080, request) == request


def _router_route(lab: Lab, destination: str) -> str:
    shown = subprocess.run(
        ["ip", "-n", lab.underlay_netns, "route", "show", destination],
        capture_output=True,
        text=True,
        check=True,
    )
    return shown.stdout


def test_apply_moves_load_balancer_routes_and_refuses_node_changes(lab_factory) -> None:
    base = demo_cluster(nodes=2, pods_per_node=1)
    lab: Lab = lab_factory(base)
    svc = Service(
        meta=ObjectMeta(name="web", namespace="default"),
        type="LoadBalancer",
        load_balancer_ingress=(LoadBalancerIngress(ip="192.0.2.80"),),
    )
    lab.apply(replace(base, services=(svc,)))
    assert "via 198.51.100.2" in _router_route(lab, "192.0.2.80")  # toward the first node
    lab.apply(base)
    assert _router_route(lab, "192.0.2.80") == ""
    with pytest.raises(LabError, match="nodes or service CIDRs changed"):
        lab.apply(demo_cluster(nodes=3, pods_per_node=1))
