"""Pod readiness from the lab's workloads (pure): the Ready condition the endpoints controller reads."""

from __future__ import annotations

from collections.abc import Collection
from dataclasses import replace

from kubeplane.model.objects import Cluster


def mark_ready(cluster: Cluster, ready_pods: Collection[str]) -> Cluster:
    """`cluster` with each pod's Ready condition set from `ready_pods` (`namespace/name` keys).

    Pods whose manifest states `ready` explicitly keep it: the manifest wins over the lab, so tests can pin a
    pod NotReady. The others are Ready exactly when the lab's workload for them is serving."""
    ready = set(ready_pods)
    pods = tuple(
        pod if pod.ready is not None else replace(pod, ready=pod.meta.key in ready) for pod in cluster.pods
    )
    return replace(cluster, pods=pods)
