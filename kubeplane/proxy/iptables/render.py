"""Render a NodePlan into kube-proxy's iptables nat and filter tables (iptables-restore text).

Pure: no root, no kernel. The text follows kube-proxy's syncProxyRules line for line (chain layout,
names, comments, rule order, probabilities to 10 decimals, "large cluster mode" dropping per-endpoint
comments above 1000 endpoints). Service ports are rendered in (name, protocol) order so the output is
deterministic, where kube-proxy walks a Go map.

`RenderedRuleset.nat` / `.filter` are whole tables as iptables-save would list them, including the
jump rules from the built-in chains, for `kubeplane rules`, the trace walker and the daemon's /rules.
`RenderedRuleset.restore_text(table, jumps)` is what the proxier feeds to `iptables-restore --noflush`:
the built-in chains are never declared there (declaring a chain flushes it), and missing jump rules
are inserted with `-I` instead, as kube-proxy's EnsureRule does before its restore.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Collection
from dataclasses import dataclass, replace

from kubeplane.model.objects import IPFamily
from kubeplane.proxy.iptables.chains import (
    KUBE_EXTERNAL_SERVICES,
    KUBE_FORWARD,
    KUBE_MARK_MASQ,
    KUBE_NODEPORTS,
    KUBE_POSTROUTING,
    KUBE_PROXY_FIREWALL,
    KUBE_SERVICES,
    KUBELET_FIREWALL,
)
from kubeplane.proxy.iptables.service_rules import NodeContext, RuleBuffers, write_service_port
from kubeplane.proxy.plan import NodePlan, ip_family

LARGE_CLUSTER_ENDPOINTS = 1000
BUILTIN_CHAINS = {
    "nat": ("PREROUTING", "INPUT", "OUTPUT", "POSTROUTING"),
    "filter": ("INPUT", "FORWARD", "OUTPUT"),
}
NODEPORTS_COMMENT = '"kubernetes service nodeports; NOTE: this must be the last rule in this chain"'


@dataclass(frozen=True)
class JumpRule:
    """A rule in a built-in chain that sends packets into one of our chains (kube-proxy's jump chains)."""

    table: str
    chain: str
    target: str
    comment: str = ""
    ctstate_new: bool = False

    @property
    def spec(self) -> str:
        """The rule without `-A CHAIN`, in iptables-save's own order, so it can be found in a save dump."""
        parts = []
        if self.ctstate_new:
            parts.append("-m conntrack --ctstate NEW")
        if self.comment:
            parts.append(f'-m comment --comment "{self.comment}"')
        parts.append(f"-j {self.target}")
        return " ".join(parts)


_PORTALS = "kubernetes service portals"
_EXTERNAL = "kubernetes externally-visible service portals"
_LB_FIREWALL = "kubernetes load balancer firewall"
# kube-proxy's iptablesJumpChains then iptablesKubeletJumpChains, in its order. Each is prepended to its
# built-in chain, so within one chain the last listed ends up first.
_JUMPS = (
    JumpRule("filter", "INPUT", KUBE_EXTERNAL_SERVICES, _EXTERNAL, True),
    JumpRule("filter", "FORWARD", KUBE_EXTERNAL_SERVICES, _EXTERNAL, True),
    JumpRule("filter", "INPUT", KUBE_NODEPORTS, "kubernetes health check service ports"),
    JumpRule("filter", "FORWARD", KUBE_SERVICES, _PORTALS, True),
    JumpRule("filter", "OUTPUT", KUBE_SERVICES, _PORTALS, True),
    JumpRule("filter", "FORWARD", KUBE_FORWARD, "kubernetes forwarding rules"),
    JumpRule("filter", "INPUT", KUBE_PROXY_FIREWALL, _LB_FIREWALL, True),
    JumpRule("filter", "OUTPUT", KUBE_PROXY_FIREWALL, _LB_FIREWALL, True),
    JumpRule("filter", "FORWARD", KUBE_PROXY_FIREWALL, _LB_FIREWALL, True),
    JumpRule("nat", "OUTPUT", KUBE_SERVICES, _PORTALS),
    JumpRule("nat", "PREROUTING", KUBE_SERVICES, _PORTALS),
    JumpRule("nat", "POSTROUTING", KUBE_POSTROUTING, "kubernetes postrouting rules"),
)
_KUBELET_JUMPS = (
    JumpRule("filter", "INPUT", KUBELET_FIREWALL),
    JumpRule("filter", "OUTPUT", KUBELET_FIREWALL),
)


def jump_rules(family: IPFamily) -> tuple[JumpRule, ...]:
    """The jump rules in the order kube-proxy ensures them (KUBE-FIREWALL only exists for IPv4)."""
    return _JUMPS + (_KUBELET_JUMPS if family == "IPv4" else ())


@dataclass(frozen=True)
class RenderedRuleset:
    """The rendered tables of one family. `partial` renders hold only changed services' own chains."""

    family: IPFamily
    partial: bool
    filter_chains: str
    filter_rules: str
    nat_chains: str
    nat_rules: str
    nat_tail: str
    active_nat_chains: frozenset[str]
    jumps: tuple[JumpRule, ...]
    stale_chains: tuple[str, ...] = ()

    def with_stale_chains(self, stale: Collection[str]) -> RenderedRuleset:
        """The same ruleset also flushing and deleting `stale` chains (known only at apply time)."""
        return replace(self, stale_chains=tuple(sorted(stale)))

    @property
    def nat(self) -> str:
        return self._table_text("nat", *self._nat_parts())

    def _nat_parts(self) -> tuple[str, str]:
        """kube-proxy's order: stale chains are declared with the others and deleted after every rule that
        could reference them, just before the KUBE-NODEPORTS tail rule."""
        declare = "".join(f":{c} - [0:0]\n" for c in self.stale_chains)
        delete = "".join(f"-X {c}\n" for c in self.stale_chains)
        return self.nat_chains + declare, self.nat_rules + delete + self.nat_tail

    @property
    def filter(self) -> str:
        return self._table_text("filter", self.filter_chains, self.filter_rules)

    @property
    def text(self) -> str:
        """Both tables, filter first as kube-proxy writes them."""
        return self.filter + self.nat

    def _table_text(self, table: str, chains: str, rules: str) -> str:
        builtin = "".join(f":{c} ACCEPT [0:0]\n" for c in BUILTIN_CHAINS[table])
        jumps = "".join(
            f"-A {j.chain} {j.spec}\n"
            for chain in BUILTIN_CHAINS[table]
            for j in reversed(self.jumps)
            if j.table == table and j.chain == chain
        )
        return f"*{table}\n{builtin}{chains}{jumps}{rules}COMMIT\n"

    def restore_text(self, table: str, missing_jumps: Collection[JumpRule] = ()) -> str:
        """The iptables-restore --noflush input for `table`, inserting `missing_jumps` at the top of their
        built-in chains (kube-proxy's EnsureRule prepends them the same way)."""
        if table == "nat":
            chains, rules = self._nat_parts()
        else:
            chains, rules = self.filter_chains, self.filter_rules
        inserts = "".join(f"-I {j.chain} 1 {j.spec}\n" for j in missing_jumps if j.table == table)
        return f"*{table}\n{chains}{inserts}{rules}COMMIT\n"


def render_iptables(
    plan: NodePlan,
    family: IPFamily = "IPv4",
    *,
    changed: Collection[tuple[str, str, IPFamily]] | None = None,
    stale_chains: Collection[str] = (),
) -> RenderedRuleset:
    """Render `plan`'s `family` service ports.

    `changed` None renders everything (full sync). Otherwise it lists ServicePortPlan.identity values
    whose own chains must be rewritten: every other service's KUBE-SVC/SVL/EXT/FW/SEP chains are left out
    (and left alone by --noflush), while the shared chains are always complete. `stale_chains` are
    flushed and deleted (`:X - [0:0]` then `-X X`), after the rules that referenced them are gone.
    """
    ctx = node_context(plan, family)
    mark = plan.masquerade_mark
    buffers = RuleBuffers()
    buffers.nat_rules.extend(static_nat_rules(mark))
    buffers.filter_rules.extend(kubelet_filter_rules(family))
    changed_set = None if changed is None else set(changed)
    # Rules are written service by service into one buffer, as kube-proxy does: a service's KUBE-SERVICES
    # rules come right before its own chains' rules.
    for sp in plan.ports_for(family):
        own = buffers if changed_set is None or sp.identity in changed_set else None
        write_service_port(sp, ctx, buffers, own)
    buffers.filter_rules.extend(forward_rules(mark))
    return RenderedRuleset(
        family=family,
        partial=changed is not None,
        filter_chains=lines_text(filter_chain_lines(family)),
        filter_rules=lines_text(buffers.filter_rules),
        nat_chains=lines_text(nat_chain_lines() + buffers.nat_chains),
        nat_rules=lines_text(buffers.nat_rules),
        nat_tail=lines_text(nodeport_tail_rules(plan, family)),
        active_nat_chains=frozenset(buffers.active_nat_chains),
        jumps=jump_rules(family),
        stale_chains=tuple(sorted(stale_chains)),
    )


def filter_chain_lines(family: IPFamily) -> list[str]:
    """The filter table's own chains, in kube-proxy's order (KUBE-FIREWALL is IPv4 only)."""
    chains = [KUBE_SERVICES, KUBE_EXTERNAL_SERVICES, KUBE_FORWARD, KUBE_NODEPORTS, KUBE_PROXY_FIREWALL]
    if family == "IPv4":
        chains.append(KUBELET_FIREWALL)
    return [f":{c} - [0:0]" for c in chains]


def nat_chain_lines() -> list[str]:
    return [f":{c} - [0:0]" for c in (KUBE_SERVICES, KUBE_NODEPORTS, KUBE_POSTROUTING, KUBE_MARK_MASQ)]


def static_nat_rules(mark: str) -> list[str]:
    """KUBE-POSTROUTING and KUBE-MARK-MASQ: the masquerade machinery every service relies on."""
    return [
        f"-A {KUBE_POSTROUTING} -m mark ! --mark {mark}/{mark} -j RETURN",
        f"-A {KUBE_POSTROUTING} -j MARK --xor-mark {mark}",
        f'-A {KUBE_POSTROUTING} -m comment --comment "kubernetes service traffic requiring SNAT" '
        "-j MASQUERADE --random-fully",
        f"-A {KUBE_MARK_MASQ} -j MARK --or-mark {mark}",
    ]


def kubelet_filter_rules(family: IPFamily) -> list[str]:
    """kubelet's localhost guard that kube-proxy also writes when localhost NodePorts are on (IPv4)."""
    if family != "IPv4":
        return []
    return [
        f'-A {KUBELET_FIREWALL} -m comment --comment "block incoming localnet connections" '
        "-d 127.0.0.0/8 ! -s 127.0.0.0/8 -m conntrack ! --ctstate RELATED,ESTABLISHED,DNAT -j DROP"
    ]


def forward_rules(mark: str) -> list[str]:
    return [
        f"-A {KUBE_FORWARD} -m conntrack --ctstate INVALID -j DROP",
        f'-A {KUBE_FORWARD} -m comment --comment "kubernetes forwarding rules" '
        f"-m mark --mark {mark}/{mark} -j ACCEPT",
        f'-A {KUBE_FORWARD} -m comment --comment "kubernetes forwarding conntrack rule" '
        "-m conntrack --ctstate RELATED,ESTABLISHED -j ACCEPT",
    ]


def node_context(plan: NodePlan, family: IPFamily, large_cluster: bool | None = None) -> NodeContext:
    """The node-wide facts every service's own chains depend on: when they change between two syncs, a
    partial sync would leave unchanged services' chains stale, so the proxier syncs fully instead.
    `large_cluster` None: decided from the endpoint count of the plan's ports of `family`."""
    if large_cluster is None:
        large_cluster = sum(len(sp.endpoints) for sp in plan.ports_for(family)) > LARGE_CLUSTER_ENDPOINTS
    return NodeContext(
        node_ip=plan.node_ip(family),
        if_local=plan.if_local(family),
        if_not_local=plan.if_not_local(family),
        masquerade_all=plan.masquerade_all,
        large_cluster=large_cluster,
    )


def nodeport_tail_rules(plan: NodePlan, family: IPFamily) -> list[str]:
    """The last rule(s) of KUBE-SERVICES, sending traffic for node addresses to KUBE-NODEPORTS."""
    if not plan.node_port_addresses:
        # IPv4 localhost NodePorts stay allowed (kube-proxy's localhostNodePorts default); IPv6 never.
        exclude = " ! -d ::1/128" if family == "IPv6" else ""
        return [
            f"-A {KUBE_SERVICES} -m comment --comment {NODEPORTS_COMMENT} "
            f"-m addrtype --dst-type LOCAL{exclude} -j {KUBE_NODEPORTS}"
        ]
    return [
        f"-A {KUBE_SERVICES} -m comment --comment {NODEPORTS_COMMENT} -d {ip} -j {KUBE_NODEPORTS}"
        for ip in node_port_ips(plan, family)
    ]


def node_port_ips(plan: NodePlan, family: IPFamily) -> list[str]:
    """The node addresses that nodePortAddresses selects: `primary` means the node's InternalIPs, a CIDR
    selects the node IPs (and loopback) inside it. IPv6 loopback is skipped as kube-proxy does."""
    candidates = [ip for ip in plan.node_ips if ip_family(ip) == family]
    candidates.append("127.0.0.1" if family == "IPv4" else "::1")
    selected: list[str] = []
    for entry in plan.node_port_addresses:
        if entry == "primary":
            picked = [ip for ip in plan.node_ips if ip_family(ip) == family]
        elif ip_family(entry) == family:
            network = ipaddress.ip_network(entry, strict=False)
            picked = [ip for ip in candidates if ipaddress.ip_address(ip) in network]
        else:
            picked = []
        selected.extend(ip for ip in picked if ip not in selected and ip != "::1")
    return selected


def lines_text(lines: list[str]) -> str:
    return "\n".join(lines) + "\n" if lines else ""
