"""The rules of one service port, in the order and wording of kube-proxy's syncProxyRules loop body.

`write_service_port` appends to four line lists (filter rules, nat chain declarations, nat rules for the
shared dispatch chains, nat rules for the service's own chains). The split exists for partial syncs:
the shared chains (KUBE-SERVICES, KUBE-NODEPORTS, the filter chains) are always rewritten whole, while a
service's own chains (KUBE-SVC/SVL/EXT/FW/SEP) are only written when its plan changed.
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass, field
from functools import lru_cache

from kubeplane.proxy.endpoints import EndpointPlan
from kubeplane.proxy.iptables.chains import (
    KUBE_EXTERNAL_SERVICES,
    KUBE_MARK_MASQ,
    KUBE_NODEPORTS,
    KUBE_PROXY_FIREWALL,
    KUBE_SERVICES,
    endpoint_chains,
    external_chain,
    firewall_chain,
    service_chain,
    service_local_chain,
)
from kubeplane.proxy.plan import ServicePortPlan, ip_family


@dataclass
class RuleBuffers:
    """Line lists a render pass fills; `own_*` receive the per-service chains (skipped when unchanged)."""

    filter_rules: list[str] = field(default_factory=list)
    nat_chains: list[str] = field(default_factory=list)
    nat_rules: list[str] = field(default_factory=list)
    active_nat_chains: set[str] = field(default_factory=set)


@dataclass(frozen=True)
class NodeContext:
    """The node facts every service port's rules depend on."""

    node_ip: str | None
    if_local: str | None  # the local-traffic detector's arguments (`-s CIDR`, `-i IFACE`); None: no detector
    if_not_local: str | None
    masquerade_all: bool
    large_cluster: bool


@lru_cache(maxsize=1024)
def probability(n: int) -> str:
    """The statistic match probability for the first of `n` remaining endpoints: 1/n to 10 decimals."""
    return f"{1.0 / n:.10f}"


def write_service_port(
    sp: ServicePortPlan, ctx: NodeContext, shared: RuleBuffers, own: RuleBuffers | None
) -> None:
    """Append the rules of `sp`; `own` None means its own chains are unchanged (partial sync): still
    counted as active, but not written."""
    name = sp.name_string
    proto = sp.protocol.lower()
    cats = sp.categories
    svc_chain = service_chain(name, proto)
    svl_chain = service_local_chain(name, proto)
    ext_chain = external_chain(name, proto)
    fw_chain = firewall_chain(name, proto)

    has_endpoints = cats.has_any
    uses_cluster_chain = bool(cats.cluster) and sp.uses_cluster_endpoints
    uses_local_chain = bool(cats.local) and sp.uses_local_endpoints
    internal_chain = svl_chain if sp.internal_policy_local else svc_chain
    has_internal = has_endpoints and not (sp.internal_policy_local and not cats.local)
    external_policy_chain = svl_chain if sp.external_policy_local else svc_chain
    has_external = has_endpoints and not (sp.external_policy_local and not cats.local)
    uses_ext_chain = has_endpoints and sp.externally_accessible
    uses_fw_chain = has_endpoints and bool(sp.load_balancer_ips) and bool(sp.load_balancer_source_ranges)
    lb_chain = fw_chain if uses_fw_chain else ext_chain

    if not has_endpoints:
        internal_target = external_target = "REJECT"
        internal_comment = external_comment = f'"{name} has no endpoints"'
    else:
        internal_target = external_target = "DROP"
        internal_comment = external_comment = f'"{name} has no local endpoints"'

    match = f"-m {proto} -p {proto}"
    filters = shared.filter_rules
    nat = shared.nat_rules

    cluster_ip_match = (
        f'-m comment --comment "{name} cluster IP" {match} -d {sp.cluster_ip} --dport {sp.port}'
    )
    if has_internal:
        nat.append(f"-A {KUBE_SERVICES} {cluster_ip_match} -j {internal_chain}")
    else:
        filters.append(
            f"-A {KUBE_SERVICES} -m comment --comment {internal_comment} {match} "
            f"-d {sp.cluster_ip} --dport {sp.port} -j {internal_target}"
        )

    for ip in sp.external_ips:
        if has_endpoints:
            nat.append(
                f'-A {KUBE_SERVICES} -m comment --comment "{name} external IP" {match} '
                f"-d {ip} --dport {sp.port} -j {ext_chain}"
            )
        if not has_external:
            filters.append(
                f"-A {KUBE_EXTERNAL_SERVICES} -m comment --comment {external_comment} {match} "
                f"-d {ip} --dport {sp.port} -j {external_target}"
            )

    for ip in sp.load_balancer_ips:
        if has_endpoints:
            nat.append(
                f'-A {KUBE_SERVICES} -m comment --comment "{name} loadbalancer IP" {match} '
                f"-d {ip} --dport {sp.port} -j {lb_chain}"
            )
        if uses_fw_chain:
            filters.append(
                f'-A {KUBE_PROXY_FIREWALL} -m comment --comment "{name} traffic not accepted by {fw_chain}" '
                f"{match} -d {ip} --dport {sp.port} -j DROP"
            )
    if not has_external:
        for ip in sp.load_balancer_ips:
            filters.append(
                f"-A {KUBE_EXTERNAL_SERVICES} -m comment --comment {external_comment} {match} "
                f"-d {ip} --dport {sp.port} -j {external_target}"
            )

    if sp.node_port:
        if has_endpoints:
            nat.append(
                f"-A {KUBE_NODEPORTS} -m comment --comment {name} {match} "
                f"--dport {sp.node_port} -j {ext_chain}"
            )
        if not has_external:
            filters.append(
                f"-A {KUBE_EXTERNAL_SERVICES} -m comment --comment {external_comment} "
                f"-m addrtype --dst-type LOCAL {match} --dport {sp.node_port} -j {external_target}"
            )

    if sp.health_check_node_port:
        filters.append(
            f'-A {KUBE_NODEPORTS} -m comment --comment "{name} health check node port" '
            f"-m tcp -p tcp --dport {sp.health_check_node_port} -j ACCEPT"
        )

    active = shared.active_nat_chains
    if uses_ext_chain:
        active.add(ext_chain)
    if uses_fw_chain:
        active.add(fw_chain)
    if uses_cluster_chain:
        active.add(svc_chain)
    if uses_local_chain:
        active.add(svl_chain)
    reachable = cats.reachable
    addresses = tuple([ep.address for ep in reachable])
    sep_chains = endpoint_chains(name, proto, addresses)
    active.update(sep_chains)
    if own is None:
        return

    chains = own.nat_chains
    rules = own.nat_rules
    if has_internal:
        if ctx.masquerade_all:
            rules.append(f"-A {internal_chain} {cluster_ip_match} -j {KUBE_MARK_MASQ}")
        elif ctx.if_not_local is not None:
            rules.append(f"-A {internal_chain} {cluster_ip_match} {ctx.if_not_local} -j {KUBE_MARK_MASQ}")

    if uses_ext_chain:
        chains.append(f":{ext_chain} - [0:0]")
        if not sp.external_policy_local:
            rules.append(
                f'-A {ext_chain} -m comment --comment "masquerade traffic for {name} external destinations" '
                f"-j {KUBE_MARK_MASQ}"
            )
        else:
            if ctx.if_local is not None:
                rules.append(
                    f'-A {ext_chain} -m comment --comment "pod traffic for {name} external destinations" '
                    f"{ctx.if_local} -j {svc_chain}"
                )
            rules.append(
                f"-A {ext_chain} -m comment "
                f'--comment "masquerade LOCAL traffic for {name} external destinations" '
                f"-m addrtype --src-type LOCAL -j {KUBE_MARK_MASQ}"
            )
            rules.append(
                f'-A {ext_chain} -m comment --comment "route LOCAL traffic for {name} external destinations" '
                f"-m addrtype --src-type LOCAL -j {svc_chain}"
            )
        if has_external:
            rules.append(f"-A {ext_chain} -j {external_policy_chain}")

    if uses_fw_chain:
        chains.append(f":{fw_chain} - [0:0]")
        fw_prefix = f'-A {fw_chain} -m comment --comment "{name} loadbalancer IP"'
        allow_from_node = False
        for cidr in sp.load_balancer_source_ranges:
            rules.append(f"{fw_prefix} -s {cidr} -j {ext_chain}")
            allow_from_node = allow_from_node or _contains(cidr, ctx.node_ip)
        if allow_from_node:
            for ip in sp.load_balancer_ips:
                rules.append(f"{fw_prefix} -s {ip} -j {ext_chain}")
        rules.append(
            f"-A {fw_chain} -m comment "
            f'--comment "other traffic to {name} will be dropped by {KUBE_PROXY_FIREWALL}"'
        )

    large = ctx.large_cluster
    if uses_cluster_chain:
        chains.append(f":{svc_chain} - [0:0]")
        _write_dispatch(rules, sp, svc_chain, _subset(cats.cluster, reachable, addresses, sep_chains), large)
    if uses_local_chain:
        chains.append(f":{svl_chain} - [0:0]")
        _write_dispatch(rules, sp, svl_chain, _subset(cats.local, reachable, addresses, sep_chains), large)

    comment = "" if large else f" -m comment --comment {name}"
    if sp.affinity_timeout is None:
        for ep, address, sep in zip(reachable, addresses, sep_chains, strict=True):
            chains.append(f":{sep} - [0:0]")
            rules.append(f"-A {sep}{comment} -s {ep.ip} -j {KUBE_MARK_MASQ}")
            rules.append(f"-A {sep}{comment} {match} -j DNAT --to-destination {address}")
    else:
        for ep, address, sep in zip(reachable, addresses, sep_chains, strict=True):
            chains.append(f":{sep} - [0:0]")
            rules.append(f"-A {sep}{comment} -s {ep.ip} -j {KUBE_MARK_MASQ}")
            rules.append(
                f"-A {sep}{comment} -m recent --name {sep} --set {match} -j DNAT --to-destination {address}"
            )


def _subset(
    chosen: tuple[EndpointPlan, ...],
    reachable: tuple[EndpointPlan, ...],
    addresses: tuple[str, ...],
    sep_chains: tuple[str, ...],
) -> tuple[tuple[str, ...], tuple[str, ...]]:
    """The addresses and KUBE-SEP names of `chosen` (the cluster or local set, both drawn from
    `reachable`), reusing what was computed for `reachable`: usually it is the very same tuple.
    Addresses are unique within a service port (the plan deduplicates them)."""
    if chosen is reachable:
        return addresses, sep_chains
    sep_by_address = dict(zip(addresses, sep_chains, strict=True))
    picked = tuple([ep.address for ep in chosen])
    return picked, tuple([sep_by_address[address] for address in picked])


def _write_dispatch(
    rules: list[str],
    sp: ServicePortPlan,
    chain: str,
    seps: tuple[tuple[str, ...], tuple[str, ...]],
    large: bool,
) -> None:
    """kube-proxy's writeServiceToEndpointRules: affinity checks first, then the random spread."""
    name = sp.name_string
    addresses, sep_chains = seps
    if large:
        comments = [""] * len(addresses)
    else:
        comments = [f' -m comment --comment "{name} -> {address}"' for address in addresses]
    if sp.affinity_timeout is not None:
        check = f"--rcheck --seconds {sp.affinity_timeout} --reap"
        for comment, sep in zip(comments, sep_chains, strict=True):
            rules.append(f"-A {chain}{comment} -m recent --name {sep} {check} -j {sep}")
    count = len(sep_chains)
    for i, (comment, sep) in enumerate(zip(comments, sep_chains, strict=True)):
        if i == count - 1:
            rules.append(f"-A {chain}{comment} -j {sep}")
        else:
            spread = f"-m statistic --mode random --probability {probability(count - i)}"
            rules.append(f"-A {chain}{comment} {spread} -j {sep}")


def _contains(cidr: str, ip: str | None) -> bool:
    if ip is None or ip_family(ip) != ip_family(cidr):
        return False
    return ipaddress.ip_address(ip) in ipaddress.ip_network(cidr, strict=False)
