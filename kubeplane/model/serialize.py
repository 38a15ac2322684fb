"""Objects back to Kubernetes-shaped dicts (`kubeplane get -o yaml|json`, the daemon's /state).

The output is what the API server would return after defaulting: allocated clusterIPs and nodePorts, placed
pods with their IPs, derived EndpointSlices. Empty optional fields are left out, as `kubectl get -o yaml`
does. Parsing the output gives back an equal object.
"""

from __future__ import annotations

from functools import singledispatch
from typing import Any

from kubeplane.model.formats import format_duration
from kubeplane.model.objects import (
    Endpoint,
    EndpointSlice,
    KubeObject,
    KubeplaneConfiguration,
    KubeProxyConfiguration,
    Namespace,
    Node,
    ObjectMeta,
    Pod,
    Service,
    ServiceCIDR,
    ServicePort,
    SyncPeriods,
)

Manifest = dict[str, Any]


def _compact(mapping: Manifest) -> Manifest:
    """Drop keys whose value is None or empty, keeping False and 0 (they mean something)."""
    return {k: v for k, v in mapping.items() if v is not None and v != {} and v != [] and v != ""}


def _metadata(meta: ObjectMeta) -> Manifest:
    return _compact(
        {
            "name": meta.name,
            "namespace": meta.namespace,
            "labels": dict(meta.labels),
            "annotations": dict(meta.annotations),
            "deletionTimestamp": meta.deletion_timestamp,
        }
    )


def _head(api_version: str, kind: str, meta: ObjectMeta) -> Manifest:
    return {"apiVersion": api_version, "kind": kind, "metadata": _metadata(meta)}


@singledispatch
def to_manifest(obj: KubeObject) -> Manifest:
    """The Kubernetes-shaped dict of one object (apiVersion, kind, metadata, spec/status or fields)."""
    raise TypeError(f"not a kubeplane object: {type(obj).__name__}")


@to_manifest.register
def _service(obj: Service) -> Manifest:
    spec = _compact(
        {
            "type": obj.type,
            "selector": dict(obj.selector or {}),
            "clusterIP": "None" if obj.headless else obj.cluster_ip,
            "clusterIPs": ["None"] if obj.headless else list(obj.cluster_ips),
            "ipFamilies": list(obj.ip_families),
            "ipFamilyPolicy": obj.ip_family_policy,
            "ports": [_service_port(p) for p in obj.ports],
            "externalIPs": list(obj.external_ips),
            "loadBalancerIP": obj.load_balancer_ip,
            "loadBalancerSourceRanges": list(obj.load_balancer_source_ranges),
            "sessionAffinity": obj.session_affinity,
            "sessionAffinityConfig": (
                {"clientIP": {"timeoutSeconds": obj.session_affinity_timeout}}
                if obj.session_affinity == "ClientIP"
                else None
            ),
            "externalTrafficPolicy": obj.external_traffic_policy
            if obj.type in ("NodePort", "LoadBalancer")
            else None,
            "internalTrafficPolicy": obj.internal_traffic_policy if obj.type != "ExternalName" else None,
            "healthCheckNodePort": obj.health_check_node_port,
            "publishNotReadyAddresses": obj.publish_not_ready_addresses or None,
            "externalName": obj.external_name,
            "trafficDistribution": obj.traffic_distribution,
            "allocateLoadBalancerNodePorts": False if not obj.allocate_load_balancer_node_ports else None,
        }
    )
    manifest = {**_head("v1", "Service", obj.meta), "spec": spec}
    if obj.load_balancer_ingress:
        ingress = [
            _compact({"ip": i.ip, "hostname": i.hostname, "ipMode": i.ip_mode})
            for i in obj.load_balancer_ingress
        ]
        manifest["status"] = {"loadBalancer": {"ingress": ingress}}
    return manifest


def _service_port(port: ServicePort) -> Manifest:
    return _compact(
        {
            "name": port.name,
            "protocol": port.protocol,
            "port": port.port,
            "targetPort": port.target_port,
            "nodePort": port.node_port,
            "appProtocol": port.app_protocol,
        }
    )


@to_manifest.register
def _endpoint_slice(obj: EndpointSlice) -> Manifest:
    ports = [
        _compact({"name": p.name, "protocol": p.protocol, "port": p.port, "appProtocol": p.app_protocol})
        for p in obj.ports
    ]
    return {
        **_head("discovery.k8s.io/v1", "EndpointSlice", obj.meta),
        "addressType": obj.address_type,
        "endpoints": [_endpoint(e) for e in obj.endpoints],
        "ports": ports,
    }


def _endpoint(endpoint: Endpoint) -> Manifest:
    conditions = endpoint.conditions
    hints = endpoint.hints
    ref = endpoint.target_ref
    return _compact(
        {
            "addresses": list(endpoint.addresses),
            "conditions": _compact(
                {
                    "ready": conditions.ready,
                    "serving": conditions.serving,
                    "terminating": conditions.terminating,
                }
            ),
            "hostname": endpoint.hostname,
            "nodeName": endpoint.node_name,
            "zone": endpoint.zone,
            "hints": _compact(
                {
                    "forZones": [{"name": z} for z in hints.for_zones],
                    "forNodes": [{"name": n} for n in hints.for_nodes],
                }
            )
            if hints
            else None,
            "targetRef": _compact({"kind": ref.kind, "name": ref.name, "namespace": ref.namespace})
            if ref
            else None,
        }
    )


@to_manifest.register
def _pod(obj: Pod) -> Manifest:
    containers = [
        _compact(
            {
                "name": c.name,
                "ports": [
                    _compact({"name": p.name, "containerPort": p.container_port, "protocol": p.protocol})
                    for p in c.ports
                ],
            }
        )
        for c in obj.containers
    ]
    spec = _compact(
        {
            "nodeName": obj.node_name,
            "hostname": obj.hostname,
            "subdomain": obj.subdomain,
            "hostNetwork": obj.host_network or None,
            "containers": containers,
        }
    )
    ready = None if obj.ready is None else [{"type": "Ready", "status": "True" if obj.ready else "False"}]
    status = _compact(
        {
            "phase": obj.phase,
            "podIP": obj.pod_ip,
            "podIPs": [{"ip": ip} for ip in obj.pod_ips],
            "conditions": ready,
        }
    )
    return {**_head("v1", "Pod", obj.meta), "spec": spec, "status": status}


@to_manifest.register
def _node(obj: Node) -> Manifest:
    spec = _compact({"podCIDR": obj.pod_cidrs[0] if obj.pod_cidrs else None, "podCIDRs": list(obj.pod_cidrs)})
    addresses = [{"type": a.type, "address": a.address} for a in obj.addresses]
    return {**_head("v1", "Node", obj.meta), "spec": spec, "status": _compact({"addresses": addresses})}


@to_manifest.register
def _namespace(obj: Namespace) -> Manifest:
    return _head("v1", "Namespace", obj.meta)


@to_manifest.register
def _service_cidr(obj: ServiceCIDR) -> Manifest:
    return {**_head("networking.k8s.io/v1", "ServiceCIDR", obj.meta), "spec": {"cidrs": list(obj.cidrs)}}


def _periods(periods: SyncPeriods) -> Manifest:
    return _compact(
        {
            "syncPeriod": format_duration(periods.sync_period),
            "minSyncPeriod": _optional_duration(periods.min_sync_period),
        }
    )


def _optional_duration(seconds: float | None) -> str | None:
    return None if seconds is None else format_duration(seconds)


@to_manifest.register
def _kube_proxy_configuration(obj: KubeProxyConfiguration) -> Manifest:
    conntrack = obj.conntrack
    masquerade = {"masqueradeAll": obj.masquerade_all, "masqueradeBit": obj.masquerade_bit}
    return {
        **_head("kubeproxy.config.k8s.io/v1alpha1", "KubeProxyConfiguration", obj.meta),
        "mode": obj.mode,
        "clusterCIDR": obj.cluster_cidr,
        "detectLocalMode": obj.detect_local_mode,
        "detectLocal": _compact(
            {
                "bridgeInterface": obj.detect_local_bridge_interface,
                "interfaceNamePrefix": obj.detect_local_interface_name_prefix,
            }
        ),
        "nodePortAddresses": list(obj.node_port_addresses),
        "iptables": {**_periods(obj.iptables), **(masquerade if obj.mode != "nftables" else {})},
        "ipvs": {**_periods(obj.ipvs), "scheduler": obj.ipvs_scheduler, "strictARP": obj.ipvs_strict_arp},
        "nftables": {**_periods(obj.nftables), **(masquerade if obj.mode == "nftables" else {})},
        "conntrack": _compact(
            {
                "maxPerCore": conntrack.max_per_core,
                "min": conntrack.min,
                "tcpEstablishedTimeout": _optional_duration(conntrack.tcp_established_timeout),
                "tcpCloseWaitTimeout": _optional_duration(conntrack.tcp_close_wait_timeout),
                "udpTimeout": _optional_duration(conntrack.udp_timeout),
                "udpStreamTimeout": _optional_duration(conntrack.udp_stream_timeout),
            }
        ),
    }


@to_manifest.register
def _kubeplane_configuration(obj: KubeplaneConfiguration) -> Manifest:
    fields = {
        "clusterDomain": obj.cluster_domain,
        "dnsServiceIP": obj.dns_service_ip,
        "upstreamResolvers": list(obj.upstream_resolvers),
        "dnsTTL": obj.dns_ttl,
        "dnsPodsMode": obj.dns_pods_mode,
    }
    return {**_head("kubeplane.dev/v1alpha1", "KubeplaneConfiguration", obj.meta), **_compact(fields)}


def to_list_manifest(objects: list[KubeObject]) -> Manifest:
    """A `kind: List` of objects, as `kubectl get -o yaml` prints several."""
    return {"apiVersion": "v1", "kind": "List", "items": [to_manifest(obj) for obj in objects]}
