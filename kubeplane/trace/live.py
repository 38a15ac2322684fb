"""Live trace: a real packet through a running lab, the kernel's own trace of it, and explain side by side.

`trace_live(lab, source, destination)`:
1. resolves the source (`ns/pod` or `pod`, `node/NAME`, `external`) and the destination (`NAME_OR_IP:PORT
   [/proto]`; a name is resolved through the lab's DNS from inside the source namespace, as the pod would);
2. explains the packet against the rules the kernel of the node that handles it actually holds
   (`iptables-save` in that node's namespace), with that node's addresses;
3. turns on nftables tracing for this flow only in that node, opens the connection from inside the source
   namespace, and reads the conntrack entry of the NAT the kernel did;
4. compares: verdict, endpoint, masquerade and the rules that fired, and lists every disagreement.
The trace table and monitor are removed even when something fails (kubeplane.trace.nft_trace.traced).

The node that handles the packet is where its service rules apply: the source pod's node, the node itself
for `node/NAME`, and for `external` the node whose address is the destination, else the first node (the lab's
router sends LoadBalancer and external IPs there).
"""

from __future__ import annotations

import ipaddress
import logging
import random
from dataclasses import dataclass
from typing import Any

from kubeplane.netns.clients import resolve
from kubeplane.netns.lab import Lab
from kubeplane.netns.plan import LabPlan, NodePlan
from kubeplane.netns.run import run_in_netns
from kubeplane.trace.compare import Observation, disagreements
from kubeplane.trace.explain import ExplainOptions, explain_packet
from kubeplane.trace.live_probe import DNS_PROBE_NAME, ConntrackEntry, ProbeResult, read_conntrack, send_probe
from kubeplane.trace.nft_trace import LiveHit, traced
from kubeplane.trace.packet import (
    UPLINK_INTERFACE,
    BadAddress,
    Interfaces,
    NodeContext,
    Packet,
    SourceInfo,
    TransportProtocol,
    parse_endpoint,
)
from kubeplane.trace.result import Explanation, VerdictName, format_endpoint
from kubeplane.trace.rules import Ruleset
from kubeplane.trace.ruleset import parse_ruleset

log = logging.getLogger(__name__)

SOURCE_PORTS = (40000, 59999)
DEFAULT_TIMEOUT = 2.0


class LiveTraceError(RuntimeError):
    """The live trace cannot run: unknown source, unresolvable name, a lab that is not up."""


@dataclass(frozen=True)
class Flow:
    """The resolved question: who sends what to where, and which node's rules decide."""

    source: SourceInfo
    source_netns: str
    node: NodePlan
    packet: Packet
    destination_name: str | None  # the name that was resolved, when one was given
    in_interface: str | None


@dataclass(frozen=True)
class Delivery:
    pod: str | None  # `namespace/name` of the pod that answered, when known
    endpoint: str  # ip:port


@dataclass(frozen=True)
class LiveTrace:
    lab: str
    flow: Flow
    explanation: Explanation
    ruleset: Ruleset
    probe: ProbeResult
    conntrack: ConntrackEntry | None
    hits: tuple[LiveHit, ...]
    observation: Observation
    delivered_to: Delivery | None
    source_seen_by_server: str | None
    disagreements: tuple[str, ...]

    def comment_of(self, hit: LiveHit) -> str | None:
        if hit.rule is None:
            return None
        rules = self.ruleset.table(hit.table).chain(hit.chain).rules
        return rules[hit.rule - 1].comment if 0 < hit.rule <= len(rules) else None

    def to_json(self) -> dict[str, Any]:
        """Explain's contract with the live facts: verdict, masquerade and path as the kernel did them,
        endpoints as explain offers them, plus delivered_to, source_seen_by_server and the comparison."""
        explained = self.explanation.to_json()
        return {
            "mode": explained["mode"],
            "node": self.flow.node.name,
            "source": explained["source"],
            "verdict": self.observation.verdict,
            "endpoints": explained["endpoints"],
            "masquerade": self.observation.snat is not None,
            "path": [
                {
                    "hook": h.hook,
                    "table": h.table,
                    "chain": h.chain,
                    "rule": h.rule,
                    "comment": self.comment_of(h),
                    "action": h.verdict,
                }
                for h in self.hits
            ],
            "delivered_to": (
                {"pod": self.delivered_to.pod, "endpoint": self.delivered_to.endpoint}
                if self.delivered_to
                else None
            ),
            "source_seen_by_server": self.source_seen_by_server,
            "agrees": not self.disagreements,
            "disagreements": list(self.disagreements),
            "explain": explained,
        }


def trace_live(
    lab: str,
    source: str,
    destination: str,
    timeout: float = DEFAULT_TIMEOUT,
    dns_question: str = DNS_PROBE_NAME,
) -> LiveTrace:
    """Send one real packet through lab `lab` and compare what the kernel did with explain. A probe to port
    53/udp is a DNS query for `dns_question`."""
    handle = Lab(lab)
    if not handle.is_up():
        raise LiveTraceError(f"lab {lab} is not up")
    plan = handle.plan
    flow = resolve_flow(plan, source, destination)
    ruleset = parse_ruleset(run_in_netns(flow.node.netns, ["iptables-save"]))
    options = ExplainOptions(in_interface=flow.in_interface)
    explanation = explain_packet(ruleset, node_context(flow.node), flow.packet, flow.source, options)
    with traced(flow.node.netns, flow.packet) as capture:
        probe = send_probe(flow.source_netns, flow.packet, timeout, dns_question)
    conntrack = read_conntrack(flow.node.netns, flow.packet)
    observation = observe(probe, conntrack, capture.hits())
    found = disagreements(explanation, observation)
    log.info(
        "live trace lab=%s flow=%r node=%s outcome=%s verdict=%s disagreements=%d",
        lab, str(flow.packet), flow.node.name, probe.outcome, observation.verdict, len(found),
    )  # fmt: skip
    return LiveTrace(
        lab=lab,
        flow=flow,
        explanation=explanation,
        ruleset=ruleset,
        probe=probe,
        conntrack=conntrack,
        hits=observation.hits,
        observation=observation,
        delivered_to=_delivery(plan, probe, conntrack, flow.packet),
        source_seen_by_server=_seen_source(probe, conntrack),
        disagreements=found,
    )


def observe(probe: ProbeResult, conntrack: ConntrackEntry | None, hits: tuple[LiveHit, ...]) -> Observation:
    verdict: VerdictName
    if probe.outcome == "delivered":
        verdict = "DNAT" if conntrack is not None and conntrack.dnat else "ACCEPT"
    elif probe.outcome == "timeout":
        verdict = "DROP"
    else:
        verdict = "REJECT"
    dnat = conntrack.dnat if conntrack else None
    snat = conntrack.snat if conntrack else None
    return Observation(verdict=verdict, dnat=dnat, snat=snat, hits=hits)


def node_context(node: NodePlan) -> NodeContext:
    """The lab node as explain needs it (see kubeplane.netns.plan for the addressing)."""
    gateway = (node.gateway_ip,) if node.gateway_ip else ()
    return NodeContext(
        name=node.name,
        local_addresses=(node.ip, *node.external_ips, *gateway),
        pod_cidrs=(node.pod_cidr,) if node.pod_cidr else (),
        masquerade_address=node.ip,
        pod_side_address=node.gateway_ip or "",
        interfaces=Interfaces(pod_side=None, uplink=UPLINK_INTERFACE),
    )


def resolve_flow(plan: LabPlan, source: str, destination: str) -> Flow:
    sender, netns, home, in_interface = _resolve_source(plan, source)
    name, dst_ip, dport, protocol = _resolve_destination(netns, destination)
    node = home or _node_for_external(plan, dst_ip)
    sport = random.randint(*SOURCE_PORTS)
    packet = Packet(sender.ip, sport, dst_ip, dport, protocol)
    return Flow(sender, netns, node, packet, name, in_interface)


def _resolve_source(plan: LabPlan, spec: str) -> tuple[SourceInfo, str, NodePlan | None, str | None]:
    if spec == "external":
        ip = plan.external_ip
        return SourceInfo(ip, "external", f"external client {ip}", False), plan.external_netns, None, None
    if spec.startswith("node/"):
        name = spec.removeprefix("node/")
        node = next((n for n in plan.nodes if n.name == name), None)
        if node is None:
            raise LiveTraceError(f"--from {spec}: lab {plan.lab} has no node {name!r}")
        return SourceInfo(node.ip, "node", f"node {name} ({node.ip})", True), node.netns, node, None
    matches = [p for p in plan.pods if spec in (p.key, p.name)]
    if len(matches) != 1:
        problem = "no such pod" if not matches else "ambiguous, say namespace/name"
        raise LiveTraceError(f"--from {spec}: {problem} (or use node/NAME, external)")
    pod = matches[0]
    node = plan.node(pod.node)
    if pod.host_network:
        return (
            SourceInfo(pod.ip, "node", f"hostNetwork pod {pod.key} on node {pod.node}", True),
            node.netns,
            node,
            None,
        )
    where = f"pod {pod.key} on node {pod.node}"
    sender = SourceInfo(pod.ip, "pod", where, False, pod_key=pod.key, pod_node=pod.node)
    return sender, pod.netns, node, pod.node_veth


def _resolve_destination(netns: str, spec: str) -> tuple[str | None, str, int, TransportProtocol]:
    address, _, proto = spec.partition("/")
    host, _, port = address.rpartition(":")
    if not host or not port:
        raise LiveTraceError(f"--to {spec}: expected NAME_OR_IP:PORT[/tcp|udp]")
    name: str | None = None
    try:
        ipaddress.IPv4Address(host)
    except ValueError:
        name = host
        try:
            host = resolve(netns, host)
        except OSError as error:
            raise LiveTraceError(f"--to {spec}: {error}") from None
    try:
        ip, number, protocol = parse_endpoint(f"{host}:{port}" + (f"/{proto}" if proto else ""), None)
    except BadAddress as error:
        raise LiveTraceError(f"--to {spec}: {error}") from None
    if protocol == "sctp":
        raise LiveTraceError(f"--to {spec}: the live probe speaks tcp and udp only")
    return name, ip, number, protocol


def _node_for_external(plan: LabPlan, dst: str) -> NodePlan:
    for node in plan.nodes:
        if dst == node.ip or dst in node.external_ips:
            return node
    return plan.nodes[0]


def _delivery(
    plan: LabPlan, probe: ProbeResult, conntrack: ConntrackEntry | None, packet: Packet
) -> Delivery | None:
    if probe.outcome != "delivered":
        return None
    reply = probe.reply or {}
    if "podIP" in reply and "port" in reply:
        pod = f"{reply.get('namespace', '')}/{reply.get('pod', '')}" if reply.get("pod") else None
        return Delivery(pod, format_endpoint(str(reply["podIP"]), int(reply["port"])))
    ip, port = (conntrack.dnat if conntrack and conntrack.dnat else None) or (packet.dst, packet.dport)
    owner = next((p.key for p in plan.pods if p.ip == ip and not p.host_network), None)
    return Delivery(owner, format_endpoint(ip, port))


def _seen_source(probe: ProbeResult, conntrack: ConntrackEntry | None) -> str | None:
    if probe.reply and isinstance(probe.reply.get("client"), str):
        return str(probe.reply["client"])
    if probe.outcome == "delivered" and conntrack is not None:
        return format_endpoint(conntrack.reply.dst, conntrack.reply.dport)
    return None
