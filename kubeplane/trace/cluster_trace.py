"""Explain a packet in a cluster: render the node's rules as the proxy would program them, then walk them.

The walk reads the rendered iptables-restore text (`render_iptables(plan_node(...))`), not the plan, so a
wrong rule shows up as a wrong trace. In IPVS mode it reads what the IPVS backend renders: its small
iptables rule set, its ipsets, and its virtual servers, whose addresses are local to the node (kube-ipvs0).
The node's context (LOCAL addresses, what MASQUERADE writes, interface names) follows the lab's addressing;
the source's kind comes from the cluster's pod and node addresses.
"""

from __future__ import annotations

from dataclasses import replace

from kubeplane.model.objects import Cluster, IPFamily
from kubeplane.netns.names import pod_veth_ifname
from kubeplane.proxy.iptables.render import render_iptables
from kubeplane.proxy.ipvs.desired import desired_ipvs_state
from kubeplane.proxy.ipvs.iptables_rules import render_ipvs_iptables
from kubeplane.proxy.ipvs.state import IpvsState
from kubeplane.proxy.plan import plan_node
from kubeplane.trace.explain import ExplainOptions, Mode, explain_packet
from kubeplane.trace.ipvs import IpvsTable, VirtualServerEntry
from kubeplane.trace.packet import (
    IpSetContents,
    NodeContext,
    Packet,
    classify_source,
    find_node,
    node_context,
)
from kubeplane.trace.result import Explanation
from kubeplane.trace.rules import Ruleset
from kubeplane.trace.ruleset import parse_ruleset


def node_ruleset(cluster: Cluster, node_name: str, family: IPFamily = "IPv4") -> Ruleset:
    """The nat and filter tables our iptables backend renders for `node_name`, parsed."""
    rendered = render_iptables(plan_node(cluster, node_name), family=family)
    return parse_ruleset(rendered.filter, rendered.nat)


def ipvs_table(state: IpvsState) -> IpvsTable:
    servers = {
        (vs.key.protocol.lower(), vs.key.address, vs.key.port): VirtualServerEntry(
            protocol=vs.key.protocol.lower(),
            address=vs.key.address,
            port=vs.key.port,
            scheduler=vs.server.scheduler,
            persistence=vs.server.persistence_timeout,
            real_servers=tuple(rs.endpoint for rs in vs.real_servers),
            service=vs.service,
        )
        for vs in state.services
    }
    return IpvsTable(servers=servers)


def ipvs_context(context: NodeContext, state: IpvsState) -> NodeContext:
    """The node in IPVS mode: service addresses bound on kube-ipvs0 are local, and the ipsets are filled."""
    ipsets = {s.name: IpSetContents(s.set_type, frozenset(s.entries)) for s in state.ipsets}
    return replace(context, local_addresses=context.local_addresses + state.bound_addresses, ipsets=ipsets)


def explain_in_cluster(
    cluster: Cluster,
    node_name: str,
    packet: Packet,
    options: ExplainOptions | None = None,
    mode: Mode = "iptables",
) -> Explanation:
    """Explain `packet` on `node_name` of `cluster` with the rules the `mode` backend renders."""
    options = options or ExplainOptions()
    find_node(cluster, node_name)
    family: IPFamily = "IPv6" if ":" in packet.dst else "IPv4"
    source = classify_source(cluster, node_name, packet.src)
    if options.in_interface is None and source.pod_key and source.pod_node == node_name:
        namespace, _, pod = source.pod_key.partition("/")
        options = replace(options, in_interface=pod_veth_ifname(namespace, pod))
    context = node_context(cluster, node_name)
    if mode == "ipvs":
        plan = plan_node(cluster, node_name)
        state = desired_ipvs_state(plan, family, cluster.proxy_config.ipvs_scheduler)
        ruleset = parse_ruleset(render_ipvs_iptables(plan, state).text)
        return explain_packet(
            ruleset, ipvs_context(context, state), packet, source, options, "ipvs", ipvs_table(state)
        )
    ruleset = node_ruleset(cluster, node_name, family)
    return explain_packet(ruleset, context, packet, source, options, mode="iptables")
