"""Frozen, typed Kubernetes objects: the only shape cluster state takes inside kubeplane.

Every layer (store, proxy plan, DNS zone, lab, trace) reads these and nothing else, so a field exists here
exactly once with its Kubernetes default already applied by the parser. Mappings (labels, selectors) are plain
dicts inside frozen dataclasses: they are never mutated after parsing, and objects are compared, not hashed.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from functools import cached_property
from typing import Literal

Protocol = Literal["TCP", "UDP", "SCTP"]
IPFamily = Literal["IPv4", "IPv6"]
ServiceType = Literal["ClusterIP", "NodePort", "LoadBalancer", "ExternalName"]
TrafficPolicy = Literal["Cluster", "Local"]
AddressType = Literal["IPv4", "IPv6", "FQDN"]
IPFamilyPolicy = Literal["SingleStack", "PreferDualStack", "RequireDualStack"]
SessionAffinity = Literal["None", "ClientIP"]
IPMode = Literal["VIP", "Proxy"]

SERVICE_NAME_LABEL = "kubernetes.io/service-name"
ZONE_LABEL = "topology.kubernetes.io/zone"
DEFAULT_AFFINITY_TIMEOUT_SECONDS = 10800


@dataclass(frozen=True)
class Source:
    """Where an object was read from: the file, the document's index in it (0-based), and for a document of
    `kind: List` the item's index in `items`."""

    file: str
    index: int
    item: int | None = None

    def __str__(self) -> str:
        where = f"{self.file}#{self.index}"
        return where if self.item is None else f"{where}.items[{self.item}]"


@dataclass(frozen=True)
class ObjectMeta:
    name: str
    namespace: str = ""  # "" for cluster-scoped kinds (Node, Namespace, ServiceCIDR, configs)
    labels: dict[str, str] = field(default_factory=dict)
    annotations: dict[str, str] = field(default_factory=dict)
    deletion_timestamp: str | None = None
    source: Source | None = field(default=None, compare=False)

    @cached_property
    def key(self) -> str:
        """`namespace/name`, or `name` for cluster-scoped objects: the identity within one kind (cached: the
        store and the completion look it up for every object on every change)."""
        return f"{self.namespace}/{self.name}" if self.namespace else self.name


# --- Service ---------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class ServicePort:
    port: int
    protocol: Protocol = "TCP"
    name: str = ""
    target_port: int | str = 0  # int, or the name of a container port; parser defaults it to `port`
    node_port: int | None = None
    app_protocol: str | None = None


@dataclass(frozen=True)
class LoadBalancerIngress:
    ip: str | None = None
    hostname: str | None = None
    ip_mode: IPMode | None = None  # None behaves as VIP


@dataclass(frozen=True)
class Service:
    meta: ObjectMeta
    type: ServiceType = "ClusterIP"
    selector: dict[str, str] | None = None  # None: no selector, endpoints come from explicit slices
    cluster_ips: tuple[str, ...] = ()  # primary first; empty for headless and ExternalName
    headless: bool = False  # clusterIP: None
    ip_families: tuple[IPFamily, ...] = ("IPv4",)
    ip_family_policy: IPFamilyPolicy | None = None
    ports: tuple[ServicePort, ...] = ()
    external_ips: tuple[str, ...] = ()
    load_balancer_ip: str | None = None
    load_balancer_source_ranges: tuple[str, ...] = ()
    load_balancer_ingress: tuple[LoadBalancerIngress, ...] = ()
    session_affinity: SessionAffinity = "None"
    session_affinity_timeout: int = DEFAULT_AFFINITY_TIMEOUT_SECONDS
    external_traffic_policy: TrafficPolicy = "Cluster"
    internal_traffic_policy: TrafficPolicy = "Cluster"
    health_check_node_port: int | None = None
    publish_not_ready_addresses: bool = False
    external_name: str | None = None
    traffic_distribution: str | None = None
    allocate_load_balancer_node_ports: bool = True  # False: LoadBalancer ports get no nodePort allocated

    @property
    def cluster_ip(self) -> str | None:
        return self.cluster_ips[0] if self.cluster_ips else None


# --- EndpointSlice -----------------------------------------------------------------------------------------


@dataclass(frozen=True)
class EndpointConditions:
    """None means the field was absent; consumers read absent as ready/serving and not terminating."""

    ready: bool | None = None
    serving: bool | None = None
    terminating: bool | None = None


@dataclass(frozen=True)
class EndpointHints:
    for_zones: tuple[str, ...] = ()
    for_nodes: tuple[str, ...] = ()


@dataclass(frozen=True)
class ObjectReference:
    kind: str
    name: str
    namespace: str = ""


@dataclass(frozen=True)
class Endpoint:
    addresses: tuple[str, ...]
    conditions: EndpointConditions = EndpointConditions()
    hostname: str | None = None
    node_name: str | None = None
    zone: str | None = None
    hints: EndpointHints | None = None
    target_ref: ObjectReference | None = None


@dataclass(frozen=True)
class EndpointPort:
    port: int | None
    protocol: Protocol = "TCP"
    name: str = ""
    app_protocol: str | None = None


@dataclass(frozen=True)
class EndpointSlice:
    meta: ObjectMeta
    address_type: AddressType = "IPv4"
    endpoints: tuple[Endpoint, ...] = ()
    ports: tuple[EndpointPort, ...] = ()

    @property
    def service_name(self) -> str | None:
        return self.meta.labels.get(SERVICE_NAME_LABEL)


# --- Pod, Node, Namespace, ServiceCIDR ---------------------------------------------------------------------


@dataclass(frozen=True)
class ContainerPort:
    container_port: int
    protocol: Protocol = "TCP"
    name: str = ""


@dataclass(frozen=True)
class Container:
    name: str
    ports: tuple[ContainerPort, ...] = ()


@dataclass(frozen=True)
class Pod:
    meta: ObjectMeta
    node_name: str = ""  # filled by placement when the manifest leaves it empty
    hostname: str = ""
    subdomain: str = ""
    containers: tuple[Container, ...] = ()
    pod_ips: tuple[str, ...] = ()  # primary first; filled from the node's podCIDR when absent
    phase: str = "Running"
    ready: bool | None = None  # the Ready condition; None = not stated (the lab decides from its workload)
    host_network: bool = False

    @property
    def pod_ip(self) -> str | None:
        return self.pod_ips[0] if self.pod_ips else None


@dataclass(frozen=True)
class NodeAddress:
    type: str  # InternalIP, ExternalIP, Hostname, ...
    address: str


@dataclass(frozen=True)
class Node:
    meta: ObjectMeta
    pod_cidrs: tuple[str, ...] = ()
    addresses: tuple[NodeAddress, ...] = ()

    @property
    def zone(self) -> str | None:
        return self.meta.labels.get(ZONE_LABEL)

    @property
    def internal_ips(self) -> tuple[str, ...]:
        return tuple(a.address for a in self.addresses if a.type == "InternalIP")


@dataclass(frozen=True)
class Namespace:
    meta: ObjectMeta


@dataclass(frozen=True)
class ServiceCIDR:
    meta: ObjectMeta
    cidrs: tuple[str, ...]


# --- Configuration -----------------------------------------------------------------------------------------


@dataclass(frozen=True)
class SyncPeriods:
    """kube-proxy's per-mode bounded-frequency runner settings, in seconds.

    `min_sync_period` None means the configuration does not set it: kube-proxy then uses 1 s, the kubeplane
    daemon its own, much shorter default. An explicit value, 1 s included, is honoured as given.
    """

    sync_period: float = 30.0
    min_sync_period: float | None = None


@dataclass(frozen=True)
class ConntrackConfig:
    max_per_core: int | None = 32768
    min: int | None = 131072
    tcp_established_timeout: float | None = 86400.0
    tcp_close_wait_timeout: float | None = 3600.0
    udp_timeout: float | None = None
    udp_stream_timeout: float | None = None


@dataclass(frozen=True)
class KubeProxyConfiguration:
    """The fields of kubeproxy.config.k8s.io/v1alpha1 KubeProxyConfiguration that kubeplane honours."""

    meta: ObjectMeta = ObjectMeta(name="kube-proxy")
    mode: Literal["iptables", "ipvs", "nftables"] = "iptables"
    cluster_cidr: str = ""  # "" = no local-traffic detection by CIDR
    detect_local_mode: Literal["ClusterCIDR", "NodeCIDR", "BridgeInterface", "InterfaceNamePrefix"] = (
        "ClusterCIDR"
    )
    # detectLocal.bridgeInterface / .interfaceNamePrefix: what the interface modes match traffic from pods by
    detect_local_bridge_interface: str = ""
    detect_local_interface_name_prefix: str = ""
    node_port_addresses: tuple[str, ...] = ()  # () = kube-proxy's default: all local addresses
    masquerade_all: bool = False
    masquerade_bit: int = 14
    iptables: SyncPeriods = SyncPeriods()
    ipvs: SyncPeriods = SyncPeriods()
    nftables: SyncPeriods = SyncPeriods()
    ipvs_scheduler: str = "rr"
    ipvs_strict_arp: bool = False
    conntrack: ConntrackConfig = ConntrackConfig()


DEFAULT_SERVICE_CIDR = "10.96.0.0/12"
DEFAULT_POD_CIDR = "10.244.0.0/16"


@dataclass(frozen=True)
class KubeplaneConfiguration:
    """kubeplane.dev/v1alpha1 KubeplaneConfiguration: what a cluster has that kube-proxy's config lacks."""

    meta: ObjectMeta = ObjectMeta(name="kubeplane")
    cluster_domain: str = "cluster.local"
    dns_service_ip: str = ""  # "" = the 10th address of the first ServiceCIDR (10.96.0.10 by default)
    upstream_resolvers: tuple[str, ...] = ()  # "ip" or "ip:port"; () = REFUSED for non-cluster names
    dns_ttl: int = 5
    dns_pods_mode: Literal["insecure", "verified", "disabled"] = "insecure"


KubeObject = (
    Service
    | EndpointSlice
    | Pod
    | Node
    | Namespace
    | ServiceCIDR
    | KubeProxyConfiguration
    | KubeplaneConfiguration
)


@dataclass(frozen=True)
class Cluster:
    """One consistent snapshot of everything kubeplane serves, after API-server defaulting and allocation.

    `endpoint_slices` holds both the slices given in manifests and those the endpoints controller derived.
    """

    services: tuple[Service, ...] = ()
    endpoint_slices: tuple[EndpointSlice, ...] = ()
    pods: tuple[Pod, ...] = ()
    nodes: tuple[Node, ...] = ()
    namespaces: tuple[Namespace, ...] = ()
    service_cidrs: tuple[ServiceCIDR, ...] = ()
    proxy_config: KubeProxyConfiguration = KubeProxyConfiguration()
    kubeplane_config: KubeplaneConfiguration = KubeplaneConfiguration()
