"""kube-proxy's iptables chain names, computed exactly as pkg/proxy/iptables does.

Per-service chains are a prefix plus the first 16 characters of base32(sha256(...)) of the service
port name string (`ns/svc:port`), the lower-case protocol and, for KUBE-SEP, the endpoint `ip:port`.
Matching the hashes byte for byte is what lets a user diff our rules against a real node's.
"""

from __future__ import annotations

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


_BASE32 = "ABCDEFGHIJKLMNOPQRSTUVWXYZ234567"
# Every pair of base32 digits, indexed by the 10 bits they encode.
_BASE32_PAIRS = tuple(high + low for high in _BASE32 for low in _BASE32)


def _base32_16(digest: bytes) -> str:
    """The first 16 characters of base32(digest): base32 turns each 5 bytes into 8 characters on its own,
    so the first 10 bytes give exactly kube-proxy's 16. base64.b32encode is pure Python and cost more
    than the hash itself at 100k endpoints; eight table look-ups of 10 bits each do the same work."""
    v = int.from_bytes(digest[:10], "big")
    p = _BASE32_PAIRS
    return (
        f"{p[v >> 70]}{p[(v >> 60) & 1023]}{p[(v >> 50) & 1023]}{p[(v >> 40) & 1023]}"
        f"{p[(v >> 30) & 1023]}{p[(v >> 20) & 1023]}{p[(v >> 10) & 1023]}{p[v & 1023]}"
    )


def _hash16(text: str) -> str:
    return _base32_16(hashlib.sha256(text.encode()).digest())


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


def endpoint_chain(service_port_name: str, protocol: str, endpoint: str) -> str:
    """KUBE-SEP-*: one endpoint (`ip:port`, `[ip]:port` for IPv6) of one service port."""
    return SEP_PREFIX + _hash16(service_port_name + protocol.lower() + endpoint)


@lru_cache(maxsize=1 << 16)
def endpoint_chains(service_port_name: str, protocol: str, endpoints: tuple[str, ...]) -> tuple[str, ...]:
    """The KUBE-SEP-* names of a service port's endpoints, in order. Cached per service port: a sync
    after one endpoint change finds every other service's names in the cache, and the hash state of the
    shared `name + protocol` prefix is computed once and copied per endpoint."""
    prefix = hashlib.sha256((service_port_name + protocol.lower()).encode())
    names = []
    for endpoint in endpoints:
        digest = prefix.copy()
        digest.update(endpoint.encode())
        names.append(SEP_PREFIX + _base32_16(digest.digest()))
    return tuple(names)


def is_service_chain(name: str) -> bool:
    """A per-service chain kube-proxy owns and may delete when stale."""
    return name.startswith(SERVICE_CHAIN_PREFIXES)
