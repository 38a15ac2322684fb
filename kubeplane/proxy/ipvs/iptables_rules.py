"""The small iptables rule set kube-proxy's IPVS mode keeps next to IPVS (pure rendering).

IPVS does the load balancing; iptables only marks what must be masqueraded (traffic to cluster IPs from
outside the cluster CIDR, NodePorts unless Local, hairpin traffic via KUBE-LOOP-BACK), filters load-balancer
source ranges, and rejects new connections to kube-ipvs0 addresses on ports no service uses
(KUBE-IPVS-FILTER). Every per-service fact lives in an ipset, so the rules stay a few dozen lines whatever
the cluster size. The order and wording follow kube-proxy's writeIptablesRules; options are written in
iptables-save's order so the text diffs cleanly against a real node's `iptables-save`.
"""

from __future__ import annotations

from dataclasses import dataclass

from kubeplane.model.objects import IPFamily
from kubeplane.proxy.iptables.render import JumpRule
from kubeplane.proxy.ipvs import ipsets as names
from kubeplane.proxy.ipvs.ipsets import family_set_name, set_comment
from kubeplane.proxy.ipvs.state import IpvsState
from kubeplane.proxy.plan import NodePlan

KUBE_SERVICES = "KUBE-SERVICES"
KUBE_POSTROUTING = "KUBE-POSTROUTING"
KUBE_MARK_MASQ = "KUBE-MARK-MASQ"
KUBE_NODE_PORT = "KUBE-NODE-PORT"
KUBE_LOAD_BALANCER = "KUBE-LOAD-BALANCER"
KUBE_FORWARD = "KUBE-FORWARD"
KUBE_PROXY_FIREWALL = "KUBE-PROXY-FIREWALL"
KUBE_SOURCE_RANGES_FIREWALL = "KUBE-SOURCE-RANGES-FIREWALL"
KUBE_IPVS_FILTER = "KUBE-IPVS-FILTER"
KUBE_IPVS_OUT_FILTER = "KUBE-IPVS-OUT-FILTER"

NAT_CHAINS = (KUBE_SERVICES, KUBE_POSTROUTING, KUBE_NODE_PORT, KUBE_LOAD_BALANCER, KUBE_MARK_MASQ)
FILTER_CHAINS = (
    KUBE_FORWARD,
    KUBE_NODE_PORT,
    KUBE_PROXY_FIREWALL,
    KUBE_SOURCE_RANGES_FIREWALL,
    KUBE_IPVS_FILTER,
    KUBE_IPVS_OUT_FILTER,
)
BUILTIN_CHAINS = {
    "nat": ("PREROUTING", "INPUT", "OUTPUT", "POSTROUTING"),
    "filter": ("INPUT", "FORWARD", "OUTPUT"),
}
_PORTALS = "kubernetes service portals"
_FIREWALL = "kube-proxy firewall rules"
_IPVS_FILTER = "kubernetes ipvs access filter"
# kube-proxy's IPVS iptablesJumpChain, in its order; each is prepended to its built-in chain.
JUMPS = (
    JumpRule("nat", "OUTPUT", KUBE_SERVICES, _PORTALS),
    JumpRule("nat", "PREROUTING", KUBE_SERVICES, _PORTALS),
    JumpRule("nat", "POSTROUTING", KUBE_POSTROUTING, "kubernetes postrouting rules"),
    JumpRule("filter", "FORWARD", KUBE_FORWARD, "kubernetes forwarding rules"),
    JumpRule("filter", "INPUT", KUBE_NODE_PORT, "kubernetes health check rules"),
    JumpRule("filter", "INPUT", KUBE_PROXY_FIREWALL, _FIREWALL),
    JumpRule("filter", "FORWARD", KUBE_PROXY_FIREWALL, _FIREWALL),
    JumpRule("filter", "INPUT", KUBE_IPVS_FILTER, _IPVS_FILTER),
    JumpRule("filter", "OUTPUT", KUBE_IPVS_OUT_FILTER, _IPVS_FILTER),
)


@dataclass(frozen=True)
class _SetRule:
    """A rule that is written only when its set has entries (kube-proxy's ipsetWithIptablesChain)."""

    set_name: str
    table: str
    chain: str
    target: str
    match: str
    protocol: str = ""


_SET_RULES = (
    _SetRule(names.LOOP_BACK, "nat", KUBE_POSTROUTING, "MASQUERADE", "dst,dst,src"),
    _SetRule(names.LOAD_BALANCER, "nat", KUBE_SERVICES, KUBE_LOAD_BALANCER, "dst,dst"),
    _SetRule(names.LOAD_BALANCER_LOCAL, "nat", KUBE_LOAD_BALANCER, "RETURN", "dst,dst"),
    _SetRule(names.NODE_PORT_LOCAL_TCP, "nat", KUBE_NODE_PORT, "RETURN", "dst", "tcp"),
    _SetRule(names.NODE_PORT_TCP, "nat", KUBE_NODE_PORT, KUBE_MARK_MASQ, "dst", "tcp"),
    _SetRule(names.NODE_PORT_LOCAL_UDP, "nat", KUBE_NODE_PORT, "RETURN", "dst", "udp"),
    _SetRule(names.NODE_PORT_UDP, "nat", KUBE_NODE_PORT, KUBE_MARK_MASQ, "dst", "udp"),
    _SetRule(names.NODE_PORT_LOCAL_SCTP, "nat", KUBE_NODE_PORT, "RETURN", "dst,dst", "sctp"),
    _SetRule(names.NODE_PORT_SCTP, "nat", KUBE_NODE_PORT, KUBE_MARK_MASQ, "dst,dst", "sctp"),
    _SetRule(names.LOAD_BALANCER_FW, "filter", KUBE_PROXY_FIREWALL, KUBE_SOURCE_RANGES_FIREWALL, "dst,dst"),
    _SetRule(names.LOAD_BALANCER_SOURCE_CIDR, "filter", KUBE_SOURCE_RANGES_FIREWALL, "RETURN", "dst,dst,src"),
    _SetRule(names.LOAD_BALANCER_SOURCE_IP, "filter", KUBE_SOURCE_RANGES_FIREWALL, "RETURN", "dst,dst,src"),
)


@dataclass(frozen=True)
class IpvsRuleset:
    """The nat and filter rules of one family (without `*table`/COMMIT framing or chain declarations)."""

    family: IPFamily
    nat_rules: tuple[str, ...]
    filter_rules: tuple[str, ...]

    def table_text(self, table: str) -> str:
        """The table as iptables-save lists it: built-in chains, then ours by name, each chain's rules
        together (the jump rules into ours first)."""
        chains = sorted(NAT_CHAINS if table == "nat" else FILTER_CHAINS)
        rules = self.nat_rules if table == "nat" else self.filter_rules
        builtin = "".join(f":{c} ACCEPT [0:0]\n" for c in BUILTIN_CHAINS[table])
        declared = "".join(f":{c} - [0:0]\n" for c in chains)
        jumps = "".join(
            f"-A {j.chain} {j.spec}\n"
            for chain in BUILTIN_CHAINS[table]
            for j in reversed(JUMPS)
            if j.table == table and j.chain == chain
        )
        body = "".join(f"{rule}\n" for chain in chains for rule in rules if rule.split(" ", 2)[1] == chain)
        return f"*{table}\n{builtin}{declared}{jumps}{body}COMMIT\n"

    @property
    def text(self) -> str:
        """Both tables, filter first as kube-proxy writes them."""
        return self.table_text("filter") + self.table_text("nat")

    def restore_text(self, missing_jumps: tuple[JumpRule, ...] = ()) -> str:
        """`iptables-restore --noflush` input: our chains declared (so flushed and rewritten), built-in
        chains left alone except for the jump rules that are missing, which are inserted at the top."""
        parts = []
        for table, chains, rules in (
            ("filter", FILTER_CHAINS, self.filter_rules),
            ("nat", NAT_CHAINS, self.nat_rules),
        ):
            declared = "".join(f":{c} - [0:0]\n" for c in chains)
            inserts = "".join(f"-I {j.chain} 1 {j.spec}\n" for j in missing_jumps if j.table == table)
            body = "".join(f"{rule}\n" for rule in rules)
            parts.append(f"*{table}\n{declared}{inserts}{body}COMMIT\n")
        return "".join(parts)


def _comment(set_name: str) -> str:
    return f'-m comment --comment "{set_comment(set_name)}"'


def render_ipvs_iptables(plan: NodePlan, state: IpvsState) -> IpvsRuleset:
    """kube-proxy's IPVS-mode iptables rules for the family of `state`."""
    family = state.family

    def name(set_name: str) -> str:
        return family_set_name(set_name, family)

    def has(set_name: str) -> bool:
        return not state.ipset(name(set_name)).is_empty

    mark = plan.masquerade_mark
    nat: list[str] = [f"-A {KUBE_SERVICES} -s {'127.0.0.0/8' if family == 'IPv4' else '::1/128'} -j RETURN"]
    filt: list[str] = []
    for rule in _SET_RULES:
        if not has(rule.set_name):
            continue
        proto = f" -p {rule.protocol}" if rule.protocol else ""
        line = (
            f"-A {rule.chain}{proto} {_comment(rule.set_name)} -m set --match-set {name(rule.set_name)} "
            f"{rule.match} -j {rule.target}"
        )
        (nat if rule.table == "nat" else filt).append(line)

    if has(names.CLUSTER_IP):
        match = f"{_comment(names.CLUSTER_IP)} -m set --match-set {name(names.CLUSTER_IP)}"
        if_not_local = plan.if_not_local(family)
        if plan.masquerade_all:
            nat.append(f"-A {KUBE_SERVICES} {match} dst,dst -j {KUBE_MARK_MASQ}")
        elif if_not_local:
            nat.append(f"-A {KUBE_SERVICES} {if_not_local} {match} dst,dst -j {KUBE_MARK_MASQ}")
        else:
            # Without local-traffic detection, masquerade node-originated traffic whose source is a VIP
            # (the kernel picks a kube-ipvs0 address as the source of a connection to a VIP).
            nat.append(f"-A {KUBE_SERVICES} {match} src,dst -j {KUBE_MARK_MASQ}")

    for set_name, masquerade in ((names.EXTERNAL_IP, True), (names.EXTERNAL_IP_LOCAL, False)):
        if not has(set_name):
            continue
        match = f"{_comment(set_name)} -m set --match-set {name(set_name)} dst,dst"
        if masquerade:
            nat.append(f"-A {KUBE_SERVICES} {match} -j {KUBE_MARK_MASQ}")
        # Accept off-node traffic (not from a bridge port, not from a local address), and traffic to
        # external IPs that also are local addresses of the node.
        off_node = "-m physdev ! --physdev-is-in -m addrtype ! --src-type LOCAL"
        nat.append(f"-A {KUBE_SERVICES} {match} {off_node} -j ACCEPT")
        nat.append(f"-A {KUBE_SERVICES} {match} -m addrtype --dst-type LOCAL -j ACCEPT")

    nat.append(f"-A {KUBE_SERVICES} -m addrtype --dst-type LOCAL -j {KUBE_NODE_PORT}")
    nat.append(f"-A {KUBE_LOAD_BALANCER} -j {KUBE_MARK_MASQ}")
    filt.append(f"-A {KUBE_SOURCE_RANGES_FIREWALL} -j DROP")
    host_bits = 32 if family == "IPv4" else 128
    for blocked in state.blocked_node_access:
        vaddr = f"{blocked.address}/{host_bits}"
        filt.append(
            f"-A {KUBE_IPVS_OUT_FILTER} -s {vaddr} -m ipvs --vaddr {vaddr} "
            f"--vproto {_proto_number(blocked.protocol)} --vport {blocked.port} -j DROP"
        )
    for set_name in (names.CLUSTER_IP, names.LOAD_BALANCER):
        if has(set_name):
            nat.append(f"-A {KUBE_SERVICES} -m set --match-set {name(set_name)} dst,dst -j ACCEPT")

    filt.append(
        f'-A {KUBE_FORWARD} -m comment --comment "kubernetes forwarding rules" -m mark --mark {mark}/{mark} '
        "-j ACCEPT"
    )
    filt.append(
        f'-A {KUBE_FORWARD} -m comment --comment "kubernetes forwarding conntrack rule" '
        "-m conntrack --ctstate RELATED,ESTABLISHED -j ACCEPT"
    )
    filt.append(
        f"-A {KUBE_NODE_PORT} {_comment(names.HEALTH_CHECK_NODE_PORT)} "
        f"-m set --match-set {name(names.HEALTH_CHECK_NODE_PORT)} dst -j ACCEPT"
    )
    for set_name, match in (
        (names.LOAD_BALANCER, "dst,dst"),
        (names.CLUSTER_IP, "dst,dst"),
        (names.EXTERNAL_IP, "dst,dst"),
        (names.EXTERNAL_IP_LOCAL, "dst,dst"),
        (names.HEALTH_CHECK_NODE_PORT, "dst"),
    ):
        filt.append(f"-A {KUBE_IPVS_FILTER} -m set --match-set {name(set_name)} {match} -j RETURN")
    filt.append(
        f"-A {KUBE_IPVS_FILTER} -m conntrack --ctstate NEW -m set --match-set {name(names.IPVS_IPS)} dst "
        f"-j REJECT --reject-with {'icmp-port-unreachable' if family == 'IPv4' else 'icmp6-port-unreachable'}"
    )

    nat.append(f"-A {KUBE_POSTROUTING} -m mark ! --mark {mark}/{mark} -j RETURN")
    nat.append(f"-A {KUBE_POSTROUTING} -j MARK --set-xmark {mark}/0x0")
    nat.append(
        f'-A {KUBE_POSTROUTING} -m comment --comment "kubernetes service traffic requiring SNAT" '
        "-j MASQUERADE --random-fully"
    )
    nat.append(f"-A {KUBE_MARK_MASQ} -j MARK --set-xmark {mark}/{mark}")
    return IpvsRuleset(family=family, nat_rules=tuple(nat), filter_rules=tuple(filt))


def _proto_number(protocol: str) -> str:
    """`-m ipvs --vproto` as iptables-save prints it: the protocol number."""
    return {"tcp": "6", "udp": "17", "sctp": "132"}[protocol]
