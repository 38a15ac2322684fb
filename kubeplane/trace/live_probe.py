"""Send one real connection from inside a lab namespace, and read the NAT conntrack recorded for it.

The probe runs on a thread that entered the source namespace (kubeplane.netns.nsfs.in_netns), bound to
the flow's exact source address and port so the trace table and conntrack can single it out. TCP sends an
HTTP GET (the lab's echo answers with JSON naming the pod and the client address it saw); UDP sends "ping"
(the UDP echo answers JSON), or a DNS query for port 53. Failures map to what the rules did: refused
(REJECT's ICMP), timeout (DROP), unreachable.
"""

from __future__ import annotations

import json
import re
import socket
from dataclasses import dataclass
from typing import Any, Literal

from dnslib import QTYPE, RCODE, DNSRecord

from kubeplane.netns.nsfs import in_netns
from kubeplane.netns.run import run_in_netns
from kubeplane.trace.packet import Packet

ProbeOutcome = Literal["delivered", "refused", "timeout", "unreachable"]
DNS_PROBE_NAME = "kubernetes.default.svc.cluster.local"
MAX_REPLY_BYTES = 65536

_PAIR = re.compile(r"(src|dst|sport|dport)=(\S+)")


@dataclass(frozen=True)
class ProbeResult:
    outcome: ProbeOutcome
    reply: dict[str, Any] | None = None  # the echo's JSON, when it answered with one
    detail: str = ""


@dataclass(frozen=True)
class Tuple4:
    src: str
    sport: int
    dst: str
    dport: int


@dataclass(frozen=True)
class ConntrackEntry:
    """One conntrack entry: the original direction and the reply direction the NAT produced."""

    original: Tuple4
    reply: Tuple4

    @property
    def dnat(self) -> tuple[str, int] | None:
        """Where the destination was translated to (the reply comes from there), None if untranslated."""
        if (self.reply.src, self.reply.sport) == (self.original.dst, self.original.dport):
            return None
        return self.reply.src, self.reply.sport

    @property
    def snat(self) -> str | None:
        """The source address after source NAT, or None when the source was left alone. MASQUERADE to the
        address the client already had still counts: `--random-fully` rewrites the port."""
        if (self.reply.dst, self.reply.dport) == (self.original.src, self.original.sport):
            return None
        return self.reply.dst


def send_probe(netns: str, packet: Packet, timeout: float, dns_question: str = DNS_PROBE_NAME) -> ProbeResult:
    """Open the flow from `netns` and report what came back; to port 53/udp it asks `dns_question` (A)."""

    def run() -> ProbeResult:
        kind = socket.SOCK_STREAM if packet.protocol == "tcp" else socket.SOCK_DGRAM
        with socket.socket(socket.AF_INET, kind) as sock:
            sock.settimeout(timeout)
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            sock.bind((packet.src, packet.sport))
            try:
                sock.connect((packet.dst, packet.dport))
                data = _exchange(sock, packet, dns_question)
            except ConnectionRefusedError as error:
                return ProbeResult("refused", detail=str(error))
            except TimeoutError:
                return ProbeResult("timeout", detail=f"no answer within {timeout:g}s")
            except OSError as error:
                return ProbeResult("unreachable", detail=str(error))
        detail = _dns_answers(data) if packet.protocol == "udp" and packet.dport == 53 else ""
        return ProbeResult("delivered", reply=_json_object(data), detail=detail or f"{len(data)} bytes back")

    return in_netns(netns, run)


def _exchange(sock: socket.socket, packet: Packet, dns_question: str) -> bytes:
    if packet.protocol == "tcp":
        sock.sendall(f"GET / HTTP/1.1\r\nHost: {packet.dst}\r\nConnection: close\r\n\r\n".encode())
        received = b""
        while len(received) < MAX_REPLY_BYTES:
            chunk = sock.recv(MAX_REPLY_BYTES)
            if not chunk:
                break
            received += chunk
        return received.partition(b"\r\n\r\n")[2] or received
    if packet.dport == 53:
        sock.send(DNSRecord.question(dns_question).pack())
    else:
        sock.send(b"ping")
    return sock.recv(MAX_REPLY_BYTES)


def _dns_answers(data: bytes) -> str:
    """The answer section of a DNS reply in one line, e.g. `web.demo.svc.cluster.local. A 10.96.3.4`."""
    try:
        reply = DNSRecord.parse(data)
    except Exception:  # dnslib raises several unrelated types on garbage; the probe then reports bytes
        return ""
    answers = [f"{rr.rname} {QTYPE[rr.rtype]} {rr.rdata}" for rr in reply.rr]
    return "DNS answer: " + ("; ".join(answers) if answers else RCODE[reply.header.rcode])


def _json_object(data: bytes) -> dict[str, Any] | None:
    try:
        value = json.loads(data)
    except ValueError:
        return None
    return value if isinstance(value, dict) else None


def parse_conntrack(text: str) -> list[ConntrackEntry]:
    """`conntrack -L` lines: the first src/dst/sport/dport group is the original direction, then the reply."""
    entries: list[ConntrackEntry] = []
    for line in text.splitlines():
        pairs = _PAIR.findall(line)
        if len(pairs) < 8:
            continue
        first, second = dict(pairs[:4]), dict(pairs[4:8])
        try:
            entries.append(ConntrackEntry(_tuple(first), _tuple(second)))
        except (KeyError, ValueError):
            continue
    return entries


def _tuple(fields: dict[str, str]) -> Tuple4:
    return Tuple4(fields["src"], int(fields["sport"]), fields["dst"], int(fields["dport"]))


def read_conntrack(netns: str, packet: Packet) -> ConntrackEntry | None:
    """The entry of this flow in `netns`, if the kernel confirmed one (dropped NEW packets leave none)."""
    output = run_in_netns(netns, ["conntrack", "-L", "-p", packet.protocol, "-s", packet.src], check=False)
    for entry in parse_conntrack(output):
        original = entry.original
        if (original.sport, original.dst, original.dport) == (packet.sport, packet.dst, packet.dport):
            return entry
    return None
