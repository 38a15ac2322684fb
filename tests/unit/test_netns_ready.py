"""Pod readiness from the lab's workloads."""

from __future__ import annotations

from dataclasses import replace

from kubeplane.model.objects import Cluster
from kubeplane.netns.demo_cluster import demo_cluster
from kubeplane.netns.ready import mark_ready


def test_pods_are_ready_exactly_when_their_workload_serves() -> None:
    cluster = demo_cluster(nodes=2, pods_per_node=1)
    marked = mark_ready(cluster, {"default/echo-1-0"})
    assert {p.meta.name: p.ready for p in marked.pods} == {"echo-1-0": True, "echo-2-0": False}
    assert marked.nodes == cluster.nodes


def test_a_readiness_stated_in_the_manifest_wins() -> None:
    base = demo_cluster(nodes=2, pods_per_node=1)
    pinned = Cluster(
        nodes=base.nodes, pods=(replace(base.pods[0], ready=False), replace(base.pods[1], ready=True))
    )
    marked = mark_ready(pinned, {"default/echo-1-0"})
    assert [p.ready for p in marked.pods] == [False, True]
