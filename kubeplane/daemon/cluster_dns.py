"""The cluster DNS objects the daemon adds when the manifests do not bring their own.

A real cluster runs CoreDNS as pods in kube-system behind the `kube-dns` Service; pods' resolv.conf points at
that Service's ClusterIP, so DNS traffic goes through the proxy's rules like any other service traffic. The
daemon does the same: it adds a `kube-system/coredns` Pod (no lab workload: the daemon itself serves DNS on
sockets opened in that pod's namespace) and a `kube-system/kube-dns` Service selecting it, with CoreDNS's
ports `dns` 53/UDP and `dns-tcp` 53/TCP. Objects of the same kind and name in the manifests win.
`follow_store_for_dns` keeps the daemon's DNS server in step with the store.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Awaitable, Callable, Sequence

from kubeplane.dns.server import DnsServer
from kubeplane.model.objects import (
    DEFAULT_SERVICE_CIDR,
    Container,
    ContainerPort,
    KubeObject,
    KubeplaneConfiguration,
    ObjectMeta,
    Pod,
    Service,
    ServiceCIDR,
    ServicePort,
)
from kubeplane.store import ClusterStore, coalesce

DNS_NAMESPACE = "kube-system"
DNS_POD_NAME = "coredns"
DNS_SERVICE_NAME = "kube-dns"
DNS_LABELS = {"k8s-app": "kube-dns"}
WORKLOAD_ANNOTATION = "kubeplane.dev/workload"  # the lab's: "none" means no workload process in the pod


def dns_service_ip(objects: Sequence[KubeObject]) -> str:
    """The configured DNS Service IP, else the 10th address of the first ServiceCIDR (10.96.0.10)."""
    for obj in objects:
        if isinstance(obj, KubeplaneConfiguration) and obj.dns_service_ip:
            return obj.dns_service_ip
    cidr = next((o.cidrs[0] for o in objects if isinstance(o, ServiceCIDR) and o.cidrs), DEFAULT_SERVICE_CIDR)
    return str(ipaddress.ip_network(cidr, strict=False)[10])


def dns_pod() -> Pod:
    ports = (ContainerPort(53, "UDP", "dns"), ContainerPort(53, "TCP", "dns-tcp"))
    return Pod(
        meta=ObjectMeta(
            name=DNS_POD_NAME,
            namespace=DNS_NAMESPACE,
            labels=dict(DNS_LABELS),
            annotations={WORKLOAD_ANNOTATION: "none"},
        ),
        containers=(Container("coredns", ports),),
        ready=True,
    )


def dns_service(cluster_ip: str) -> Service:
    return Service(
        meta=ObjectMeta(name=DNS_SERVICE_NAME, namespace=DNS_NAMESPACE, labels=dict(DNS_LABELS)),
        selector=dict(DNS_LABELS),
        cluster_ips=(cluster_ip,),
        ports=(
            ServicePort(53, "UDP", "dns", target_port=53),
            ServicePort(53, "TCP", "dns-tcp", target_port=53),
        ),
    )


def with_cluster_dns(objects: Sequence[KubeObject]) -> tuple[KubeObject, ...]:
    """`objects` plus the coredns Pod and the kube-dns Service where missing (the model adds kube-system)."""
    present = {(type(o).__name__, o.meta.key) for o in objects}
    added: list[KubeObject] = []
    wanted: tuple[KubeObject, ...] = (
        dns_pod(),
        dns_service(dns_service_ip(objects)),
    )
    for obj in wanted:
        if (type(obj).__name__, obj.meta.key) not in present:
            added.append(obj)
    return (*objects, *added)


async def follow_store_for_dns(
    store: ClusterStore,
    server: DnsServer,
    published: Callable[[int], None],
    before_apply: Callable[[int], Awaitable[None]] | None = None,
) -> None:
    """Keep `server` answering for the store's latest version, calling `published(version)` after each
    update, until cancelled.

    Change sets are applied as they arrive, without waiting for the proxies to finish: a change to a few
    services costs the DNS server a millisecond or two on the loop (only the records and answers it touches
    are rebuilt), and larger ones are prepared on a worker thread while queries keep being answered. Several
    change sets waiting at once are applied in one go. `before_apply(version)`, when given, is awaited
    first: the daemon lets its node proxies start programming the same change, so that their restore
    processes run while the DNS update takes the loop."""
    queue = store.subscribe()
    try:
        while True:
            pending = [await queue.get()]
            while not queue.empty():
                pending.append(queue.get_nowait())
            change_set = pending[0] if len(pending) == 1 else coalesce(pending)
            if change_set is None:
                continue
            if before_apply is not None:
                await before_apply(change_set.version)
            await server.apply(change_set)
            published(change_set.version)
    finally:
        store.unsubscribe(queue)
