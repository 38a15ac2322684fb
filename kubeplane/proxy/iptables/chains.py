"""kube-proxy's iptables chain names, computed exactly as pkg/proxy/iptables does.

Per-service chains are a prefix plus the first 16 characters of base32(sha256(...)) of the service
port name string (`ns/svc:port`), the lower-case protocol and, for KUBE-SEP, the endpoint `ip:port`.
Matching the hashes byte for byte is what lets a user diff our rules against a real node's.
"""

from __future__ import annotations

import base64
import hashlib
from functools import lru_cache

KUBE_SERVICES = "KUBE-SERVICES"
KUBE_EXTERNAL_SERVICES = "KUBE-EXTERNAL-SERVICES"
KUBE_NODEPORTS = "KUBE-NODEPORTS"
KUBE_POSTROUTING = "KUBE-POSTROUTING"
KUBE_MARK_MASQ = "KUBE-MARK-MASQ"
KUBE_FORWARD = "KUBE-FORWARD"
KUBE_PROXY_FIREWALL = "KUBE-PROXY-FIREWALL"
KUBE_PROXY_CANARY = "KUBE-PROXY-CANARY"
KUBELET_FIREWALL = "KUBE-FIREWALL"

SVC_PREFIX = "KUBE-SVC-"
SVL_PREFIX = "KUBE-SVL-"
EXT_PREFIX = "KUBE-EXT-"
FW_PREFIX = "KUBE-FW-"
SEP_PREFIX = "KUBE-SEP-"
SERVICE_CHAIN_PREFIXES = (SVC_PREFIX, SVL_PREFIX, EXT_PREFIX, FW_PREFIX, SEP_PREFIX)


def _hash16(text: str) -> str:
    # Base32 turns each 5 bytes into 8 characters on its own, so the first 10 bytes of the digest give
    # exactly the first 16 characters of kube-proxy's full encoding, at a third of the cost.
    return base64.b32encode(hashlib.sha256(text.encode()).digest()[:10]).decode()


@lru_cache(maxsize=65536)
def port_proto_hash(service_port_name: str, protocol: str) -> str:
    """kube-proxy's portProtoHash; `protocol` is lower-cased as kube-proxy does before hashing."""
    return _hash16(service_port_name + protocol.lower())


def service_chain(service_port_name: str, protocol: str) -> str:
    """KUBE-SVC-*: dispatch to the cluster endpoint set."""
    return SVC_PREFIX + port_proto_hash(service_port_name, protocol)


def service_local_chain(service_port_name: str, protocol: str) -> str:
    """KUBE-SVL-*: dispatch to the local endpoint set (Local traffic policies)."""
    return SVL_PREFIX + port_proto_hash(service_port_name, protocol)


def external_chain(service_port_name: str, protocol: str) -> str:
    """KUBE-EXT-*: NodePort / external IP / LB traffic, before the policy chain."""
    return EXT_PREFIX + port_proto_hash(service_port_name, protocol)


def firewall_chain(service_port_name: str, protocol: str) -> str:
    """KUBE-FW-*: loadBalancerSourceRanges filtering."""
    return FW_PREFIX + port_proto_hash(service_port_name, protocol)


@lru_cache(maxsize=1 << 18)
def endpoint_chain(service_port_name: str, protocol: str, endpoint: str) -> str:
    """KUBE-SEP-*: one endpoint (`ip:port`, `[ip]:port` for IPv6) of one service port."""
    return SEP_PREFIX + _hash16(service_port_name + protocol.lower() + endpoint)


def is_service_chain(name: str) -> bool:
    """A per-service chain kube-proxy owns and may delete when stale."""
    return name.startswith(SERVICE_CHAIN_PREFIXES)
