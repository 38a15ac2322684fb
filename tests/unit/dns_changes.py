"""Random cluster edits for the incremental DNS tests: small pools of names and addresses so that edits
collide (shared endpoint IPs, a service IP reused as an endpoint IP, CNAMEs into the cluster, slices for
services that come later, namespaces appearing and disappearing)."""

from __future__ import annotations

import dataclasses
import random

from kubeplane.model.objects import (
    SERVICE_NAME_LABEL,
    Cluster,
    Endpoint,
    EndpointConditions,
    EndpointPort,
    EndpointSlice,
    KubeplaneConfiguration,
    Namespace,
    ObjectMeta,
    Pod,
    Service,
    ServiceCIDR,
    ServicePort,
)

NAMESPACES = ("shop", "web", "kube-system", "tmp")
SERVICE_NAMES = ("web", "db", "api", "kube-dns", "ext")
IPS = tuple(f"10.244.1.{i}" for i in range(1, 9)) + ("10.96.0.20", "fd00::5")
SERVICE_IPS = ("10.96.0.10", "10.96.0.20", "10.96.0.21", "10.96.0.22")


def random_service(rng: random.Random, namespace: str, name: str) -> Service:
    meta = ObjectMeta(name, namespace)
    roll = rng.random()
    if roll < 0.15:
        target = rng.choice(
            ["www.example.com", f"web.{namespace}.svc.cluster.local", "db.shop.svc.cluster.local"]
        )
        return Service(meta, type="ExternalName", external_name=target)
    ports = tuple(
        ServicePort(80 + i, rng.choice(["TCP", "UDP"]), rng.choice(["", "http", "dns"]))  # type: ignore[arg-type]
        for i in range(rng.randrange(3))
    )
    if roll < 0.45:
        return Service(meta, headless=True, ports=ports, publish_not_ready_addresses=rng.random() < 0.3)
    return Service(meta, cluster_ips=(rng.choice(SERVICE_IPS),), ports=ports)


def random_slice(rng: random.Random, namespace: str, index: int) -> EndpointSlice:
    owner = rng.choice(SERVICE_NAMES)
    endpoints = tuple(
        Endpoint(
            (rng.choice(IPS),),
            conditions=EndpointConditions(ready=rng.choice([True, False, None])),
            hostname=rng.choice([None, None, "pod-0", "pod-1"]),
        )
        for _ in range(rng.randrange(4))
    )
    ports = tuple(EndpointPort(rng.choice([8080, 53, None]), name=rng.choice(["", "http"])) for _ in range(2))
    meta = ObjectMeta(f"slice-{index}", namespace, labels={SERVICE_NAME_LABEL: owner})
    address_type = "IPv6" if any(":" in ip for e in endpoints for ip in e.addresses) else "IPv4"
    return EndpointSlice(meta, address_type=address_type, endpoints=endpoints, ports=ports)  # type: ignore[arg-type]


def random_edit(rng: random.Random, cluster: Cluster, config_edits: bool = True) -> Cluster:
    """`cluster` with one random object added, changed or removed (or, rarely, its DNS config changed)."""
    namespace = rng.choice(NAMESPACES)
    roll = rng.random()
    if roll < 0.35:
        name = rng.choice(SERVICE_NAMES)
        kept = tuple(s for s in cluster.services if s.meta.key != f"{namespace}/{name}")
        added = (random_service(rng, namespace, name),) if rng.random() < 0.75 else ()
        return dataclasses.replace(cluster, services=kept + added)
    if roll < 0.75:
        index = rng.randrange(5)
        kept_slices = tuple(s for s in cluster.endpoint_slices if s.meta.key != f"{namespace}/slice-{index}")
        new_slices = (random_slice(rng, namespace, index),) if rng.random() < 0.75 else ()
        return dataclasses.replace(cluster, endpoint_slices=kept_slices + new_slices)
    if roll < 0.87:
        name = f"pod-{rng.randrange(3)}"
        kept_pods = tuple(p for p in cluster.pods if p.meta.key != f"{namespace}/{name}")
        pod = Pod(ObjectMeta(name, namespace), pod_ips=(rng.choice(IPS),))
        return dataclasses.replace(cluster, pods=kept_pods + ((pod,) if rng.random() < 0.7 else ()))
    if roll < 0.94:
        declared = {n.meta.name for n in cluster.namespaces} ^ {namespace}
        return dataclasses.replace(
            cluster, namespaces=tuple(Namespace(ObjectMeta(n)) for n in sorted(declared))
        )
    if roll < 0.97 or not config_edits:
        cidr = rng.choice(["10.96.0.0/12", "10.100.0.0/16"])
        return dataclasses.replace(cluster, service_cidrs=(ServiceCIDR(ObjectMeta("kubernetes"), (cidr,)),))
    config = KubeplaneConfiguration(
        dns_ttl=rng.choice([5, 30]), dns_pods_mode=rng.choice(["insecure", "verified", "disabled"])
    )
    return dataclasses.replace(cluster, kubeplane_config=config)
