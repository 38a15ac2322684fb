"""Cluster-scoped topology kinds: `v1 Node`, `v1 Namespace` and `networking.k8s.io/v1 ServiceCIDR`.

Accepted: Node metadata.labels (topology.kubernetes.io/zone is the zone), spec.{podCIDR, podCIDRs},
status.addresses[].{type, address}; Namespace metadata only; ServiceCIDR spec.cidrs (one or two, one per
IP family, network addresses; v1 or v1beta1). When ServiceCIDRs are given they replace the default
10.96.0.0/12.
"""

from __future__ import annotations

from kubeplane.model.fields import Fields
from kubeplane.model.formats import parse_cidr, parse_ip
from kubeplane.model.objects import Namespace, Node, NodeAddress, ObjectMeta, ServiceCIDR

NODE_ADDRESS_TYPES = ("Hostname", "InternalIP", "ExternalIP", "InternalDNS", "ExternalDNS")
_IP_ADDRESS_TYPES = ("InternalIP", "ExternalIP")
# fmt: off
_IGNORED_NODE_SPEC = (
    "unschedulable", "taints", "providerID", "externalID", "configSource",
)
# fmt: on
_IGNORED_NODE_STATUS = (
    "capacity",
    "allocatable",
    "conditions",
    "daemonEndpoints",
    "nodeInfo",
    "images",
    "volumesInUse",
    "volumesAttached",
    "phase",
    "config",
    "runtimeHandlers",
    "features",
)


def parse_node(doc: Fields, meta: ObjectMeta) -> tuple[Node, ...]:
    spec = doc.section("spec")
    spec.ignore(*_IGNORED_NODE_SPEC)
    single = spec.text("podCIDR")
    cidrs = tuple(str(net) for net in spec.cidr_list("podCIDRs"))
    if single is not None:
        network = parse_cidr(single)
        if isinstance(network, str):
            spec.error("podCIDR", network)
        elif cidrs and str(network) != cidrs[0]:
            spec.error("podCIDRs[0]", f"must match spec.podCIDR {single!r}, got {cidrs[0]!r}")
        else:
            cidrs = cidrs or (str(network),)
    if len(cidrs) > 2 or (len(cidrs) == 2 and (":" in cidrs[0]) == (":" in cidrs[1])):
        spec.error("podCIDRs", "must hold at most one CIDR per IP family")
        cidrs = cidrs[:1]
    spec.finish()
    status = doc.section("status")
    status.ignore(*_IGNORED_NODE_STATUS)
    addresses = _addresses(status)
    status.finish()
    return (Node(meta=meta, pod_cidrs=cidrs, addresses=addresses),)


def _addresses(status: Fields) -> tuple[NodeAddress, ...]:
    addresses: list[NodeAddress] = []
    for entry in status.subs("addresses"):
        address_type = entry.enum("type", NODE_ADDRESS_TYPES, required=True)
        address = entry.text("address", required=True)
        entry.finish()
        if address_type is None or address is None:
            continue
        if address_type in _IP_ADDRESS_TYPES:
            parsed = parse_ip(address)
            if isinstance(parsed, str):
                entry.error("address", parsed)
                continue
            address = str(parsed)
        addresses.append(NodeAddress(type=address_type, address=address))
    return tuple(addresses)


def parse_namespace(doc: Fields, meta: ObjectMeta) -> tuple[Namespace, ...]:
    doc.ignore("spec", "status")
    return (Namespace(meta=meta),)


def parse_service_cidr(doc: Fields, meta: ObjectMeta) -> tuple[ServiceCIDR, ...]:
    spec = doc.section("spec")
    if not spec.raw("cidrs"):
        spec.error("cidrs", "must hold one or two CIDRs")
    networks = spec.cidr_list("cidrs")
    if len(networks) > 2 or (len(networks) == 2 and networks[0].version == networks[1].version):
        spec.error("cidrs", "must hold at most one CIDR per IP family")
    spec.finish()
    doc.ignore("status")
    return (ServiceCIDR(meta=meta, cidrs=tuple(str(net) for net in networks)),)
