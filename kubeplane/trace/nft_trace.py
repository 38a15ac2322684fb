"""The kernel's own trace of one flow: a temporary nftables table that sets `meta nftrace` for that flow only,
`nft monitor trace` reading the events, and the parsing that turns them back into iptables rule numbers.

iptables here is iptables-nft, so every iptables rule is an nftables rule with a handle; `nft -a list table`
lists a chain's rules in order with their handles, which gives the rule number explain uses. The trace table
hooks prerouting and output at priority -350 (before raw, conntrack and nat) and matches the flow's original
5-tuple, so only this flow's packets are traced. It is removed in `finally`, and the monitor we started is
stopped by its pid.
"""

from __future__ import annotations

import re
import subprocess
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass

from kubeplane.netns.run import netns_argv, run_in_netns
from kubeplane.trace.packet import Packet

TRACE_TABLE = "kubeplane_trace"
MONITOR_SETTLE_SECONDS = 0.4  # nft monitor subscribes right after it starts; give it that long
MONITOR_STOP_SECONDS = 2.0
BUILTIN_HOOKS = ("PREROUTING", "INPUT", "FORWARD", "OUTPUT", "POSTROUTING")

_EVENT = re.compile(r"^trace id (\S+) (ip6?|inet) (\S+) (\S+) (.*)$")
_RULE_HANDLE = re.compile(r"# handle (\d+) \(verdict ([^)]*)\)")
_CHAIN_LINE = re.compile(r"^\s*chain (\S+) \{")
_HANDLE_AT_END = re.compile(r"# handle (\d+)\s*$")


@dataclass(frozen=True)
class TraceEvent:
    """One line of `nft monitor trace` for one packet (trace id)."""

    trace_id: str
    table: str
    chain: str
    kind: str  # "rule", "policy", "packet", "verdict"
    handle: int | None = None
    verdict: str = ""
    detail: str = ""


@dataclass(frozen=True)
class LiveHit:
    """A rule (or policy) that fired for the traced packet, with the iptables rule number."""

    hook: str
    table: str
    chain: str
    rule: int | None  # None for a policy
    verdict: str


def parse_monitor_output(text: str) -> list[TraceEvent]:
    events: list[TraceEvent] = []
    for line in text.splitlines():
        found = _EVENT.match(line.strip())
        if not found:
            continue
        trace_id, _, table, chain, rest = found.groups()
        if rest.startswith("rule "):
            rule = _RULE_HANDLE.search(rest)
            handle = int(rule.group(1)) if rule else None
            verdict = rule.group(2) if rule else ""
            events.append(TraceEvent(trace_id, table, chain, "rule", handle, verdict, rest[5:]))
        elif rest.startswith("policy "):
            events.append(TraceEvent(trace_id, table, chain, "policy", verdict=rest[7:].strip()))
        elif rest.startswith("packet:"):
            events.append(TraceEvent(trace_id, table, chain, "packet", detail=rest[7:].strip()))
        elif rest.startswith("verdict "):
            events.append(TraceEvent(trace_id, table, chain, "verdict", verdict=rest[8:].strip()))
    return events


def parse_rule_handles(listing: str) -> dict[tuple[str, int], int]:
    """(chain, handle) -> 1-based rule number, from `nft -a list table ...` of one table."""
    numbers: dict[tuple[str, int], int] = {}
    chain: str | None = None
    count = 0
    for line in listing.splitlines():
        opened = _CHAIN_LINE.match(line)
        if opened:
            chain, count = opened.group(1), 0
            continue
        if line.strip() == "}":
            chain = None
            continue
        handle = _HANDLE_AT_END.search(line)
        if chain is not None and handle:
            count += 1
            numbers[(chain, int(handle.group(1)))] = count
    return numbers


def hits_of_first_packet(
    events: list[TraceEvent], handles: dict[str, dict[tuple[str, int], int]]
) -> tuple[LiveHit, ...]:
    """The rule hits and policies of the first traced packet, ours (TRACE_TABLE) left out.

    Every traced packet starts with a `packet:` event in our table, where its nftrace is set; the kernel may
    give the next packet of the flow the same trace id (it derives ids from the skb), so that event, not the
    id, is where one packet's trace ends and the next begins.
    """
    hits: list[LiveHit] = []
    hook = ""
    started = False
    for event in events:
        if event.table == TRACE_TABLE:
            if event.kind == "packet":
                if started:
                    break
                started = True
            continue
        if not started:
            continue
        if event.chain in BUILTIN_HOOKS and event.kind == "packet":
            hook = event.chain
        if event.kind == "rule" and event.handle is not None:
            number = handles.get(event.table, {}).get((event.chain, event.handle))
            hits.append(LiveHit(hook, event.table, event.chain, number, event.verdict))
        elif event.kind == "policy":
            verdict = event.verdict.split()[0] if event.verdict else ""
            hits.append(LiveHit(hook or event.chain, event.table, event.chain, None, f"policy {verdict}"))
    return tuple(hits)


def flow_match(packet: Packet) -> str:
    """The nft expression matching the packet's original 5-tuple."""
    proto = packet.protocol
    addresses = f"ip saddr {packet.src} ip daddr {packet.dst}"
    return f"{addresses} {proto} sport {packet.sport} {proto} dport {packet.dport}"


def trace_table_text(packet: Packet) -> str:
    match = flow_match(packet)
    return (
        f"table ip {TRACE_TABLE} {{\n"
        f"  chain pre {{ type filter hook prerouting priority -350; {match} meta nftrace set 1; }}\n"
        f"  chain out {{ type filter hook output priority -350; {match} meta nftrace set 1; }}\n"
        "}\n"
    )


@dataclass
class TraceCapture:
    """Filled when the `traced` block ends: the monitor's text and the rule-number maps."""

    output: str = ""
    handles: dict[str, dict[tuple[str, int], int]] | None = None

    def hits(self) -> tuple[LiveHit, ...]:
        return hits_of_first_packet(parse_monitor_output(self.output), self.handles or {})


@contextmanager
def traced(netns: str, packet: Packet) -> Iterator[TraceCapture]:
    """Trace `packet`'s flow in `netns` during the block; the table and the monitor always go afterwards."""
    capture = TraceCapture()
    run_in_netns(netns, ["nft", "-f", "-"], stdin=trace_table_text(packet))
    monitor: subprocess.Popen[str] | None = None
    try:
        monitor = subprocess.Popen(
            netns_argv(netns, ["nft", "-a", "monitor", "trace"]),
            stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL,
            text=True,
        )
        time.sleep(MONITOR_SETTLE_SECONDS)
        yield capture
        time.sleep(MONITOR_SETTLE_SECONDS)
    finally:
        if monitor is not None:
            capture.output = _stop(monitor)
        run_in_netns(netns, ["nft", "delete", "table", "ip", TRACE_TABLE], check=False)
    capture.handles = {
        table: parse_rule_handles(
            run_in_netns(netns, ["nft", "-a", "list", "table", "ip", table], check=False)
        )
        for table in ("nat", "filter")
    }


def _stop(monitor: subprocess.Popen[str]) -> str:
    monitor.terminate()
    try:
        output, _ = monitor.communicate(timeout=MONITOR_STOP_SECONDS)
    except subprocess.TimeoutExpired:
        monitor.kill()
        output, _ = monitor.communicate()
    return output or ""
