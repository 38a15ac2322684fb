"""Small builders of model objects for the proxy tests (unit and integration), so each test states only
the fields it is about."""

from __future__ import annotations

from kubeplane.model.objects import (
    SERVICE_NAME_LABEL,
    ZONE_LABEL,
    Cluster,
    Endpoint,
    EndpointConditions,
    EndpointHints,
    EndpointPort,
    EndpointSlice,
    KubeProxyConfiguration,
    Node,
    NodeAddress,
    ObjectMeta,
    Protocol,
    Service,
    ServicePort,
)


def make_node(name: str, ip: str, pod_cidr: str, zone: str | None = None) -> Node:
    labels = {ZONE_LABEL: zone} if zone else {}
    return Node(
        meta=ObjectMeta(name=name, labels=labels),
        pod_cidrs=(pod_cidr,),
        addresses=(NodeAddress("InternalIP", ip),),
    )


def make_service(
    name: str,
    cluster_ip: str,
    port: int = 80,
    *,
    namespace: str = "ns1",
    port_name: str = "p80",
    protocol: Protocol = "TCP",
    target_port: int | None = None,
    node_port: int | None = None,
    extra_ports: tuple[ServicePort, ...] = (),
    **fields: object,
) -> Service:
    svc_port = ServicePort(
        port=port, protocol=protocol, name=port_name, target_port=target_port or port, node_port=node_port
    )
    return Service(
        meta=ObjectMeta(name=name, namespace=namespace),
        selector={"app": name},
        cluster_ips=(cluster_ip,),
        ports=(svc_port, *extra_ports),
        **fields,  # type: ignore[arg-type]
    )


def make_endpoint(
    ip: str,
    node: str | None,
    *,
    ready: bool | None = None,
    serving: bool | None = None,
    terminating: bool | None = None,
    zones: tuple[str, ...] = (),
    nodes: tuple[str, ...] = (),
) -> Endpoint:
    hints = EndpointHints(for_zones=zones, for_nodes=nodes) if zones or nodes else None
    return Endpoint(
        addresses=(ip,),
        conditions=EndpointConditions(ready=ready, serving=serving, terminating=terminating),
        node_name=node,
        hints=hints,
    )


def make_slice(
    service: str,
    endpoints: tuple[Endpoint, ...],
    port: int = 80,
    *,
    namespace: str = "ns1",
    port_name: str = "p80",
    protocol: Protocol = "TCP",
    address_type: str = "IPv4",
    suffix: str = "a",
) -> EndpointSlice:
    return EndpointSlice(
        meta=ObjectMeta(
            name=f"{service}-{suffix}", namespace=namespace, labels={SERVICE_NAME_LABEL: service}
        ),
        address_type=address_type,  # type: ignore[arg-type]
        endpoints=endpoints,
        ports=(EndpointPort(port=port, protocol=protocol, name=port_name),),
    )


def make_cluster(
    services: tuple[Service, ...],
    slices: tuple[EndpointSlice, ...],
    nodes: tuple[Node, ...] | None = None,
    **config: object,
) -> Cluster:
    default_nodes = (
        make_node("node-a", "198.51.100.2", "10.244.1.0/24"),
        make_node("node-b", "198.51.100.3", "10.244.2.0/24"),
    )
    cluster_cidr = str(config.pop("cluster_cidr", "10.244.0.0/16"))
    proxy_config = KubeProxyConfiguration(cluster_cidr=cluster_cidr, **config)  # type: ignore[arg-type]
    return Cluster(
        services=services,
        endpoint_slices=slices,
        nodes=nodes if nodes is not None else default_nodes,
        proxy_config=proxy_config,
    )
