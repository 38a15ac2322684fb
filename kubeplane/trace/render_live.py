"""Text output of a live trace: the question, the kernel's hop-by-hop rule hits, the NAT conntrack recorded,
what the server saw, then explain's answer for the same packet and whether the two agree."""

from __future__ import annotations

from kubeplane.trace.live import LiveTrace
from kubeplane.trace.live_probe import Tuple4
from kubeplane.trace.render_text import render_text
from kubeplane.trace.result import format_endpoint


def render_live_text(trace: LiveTrace) -> str:
    flow = trace.flow
    resolved = (
        f" ({flow.destination_name} resolved from {flow.source_netns})" if flow.destination_name else ""
    )
    lines = [
        f"# live trace in lab {trace.lab}: {flow.packet}{resolved}",
        f"# source: {flow.source.description} [{flow.source.kind}]; rules of node {flow.node.name}",
        "",
        f"kernel trace on node {flow.node.name} (nft monitor trace, first packet of the flow):",
    ]
    hook = ""
    for hit in trace.hits:
        if hit.hook != hook:
            hook = hit.hook
            lines.append(f"{hook}")
        number = f" #{hit.rule}" if hit.rule is not None else ""
        comment = trace.comment_of(hit)
        said = f' "{comment}"' if comment else ""
        lines.append(f"  {hit.table} {hit.chain}{number}{said}: {hit.verdict}")
    if not trace.hits:
        lines.append("  (no trace events: no rule saw the packet on this node)")
    lines.append("")
    lines.append(_conntrack_line(trace))
    lines.append(_probe_line(trace))
    lines.append("")
    lines.append(f"explain for the same packet on node {flow.node.name}:")
    lines.extend("  " + line for line in render_text(trace.explanation, "minimal").splitlines() if line)
    lines.append("")
    if trace.disagreements:
        lines.append("DISAGREEMENT between the kernel and explain:")
        lines.extend(f"  - {d}" for d in trace.disagreements)
    else:
        lines.append("the kernel and explain agree")
    return "\n".join(lines) + "\n"


def _conntrack_line(trace: LiveTrace) -> str:
    entry = trace.conntrack
    if entry is None:
        return "conntrack: no entry (the connection was never confirmed: rejected or dropped)"
    sent = _arrow(entry.original)
    answered = _arrow(entry.reply)
    nat = []
    if entry.dnat:
        nat.append(f"DNAT to {format_endpoint(*entry.dnat)}")
    if entry.snat:
        nat.append(f"SNAT to {entry.snat}")
    done = "; ".join(nat) or "no NAT"
    return f"conntrack: {sent}, reply {answered} ({done})"


def _arrow(way: Tuple4) -> str:
    return f"{format_endpoint(way.src, way.sport)} -> {format_endpoint(way.dst, way.dport)}"


def _probe_line(trace: LiveTrace) -> str:
    probe = trace.probe
    if trace.delivered_to is None:
        return f"probe: {probe.outcome} ({probe.detail})"
    who = trace.delivered_to.pod or "an unknown process"
    seen = f", which saw the client as {trace.source_seen_by_server}" if trace.source_seen_by_server else ""
    answer = f" ({probe.detail})" if probe.detail.startswith("DNS") else ""
    return f"probe: delivered to {who} at {trace.delivered_to.endpoint}{seen}{answer}"
