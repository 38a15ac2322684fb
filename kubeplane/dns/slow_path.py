"""The slow path: queries the answer table cannot serve as they are, answered from a full parse.

What comes here: the first query for a question the table has not packed yet (a negative answer, a pod
name; packed and remembered for next time), malformed or unusual queries (FORMERR, NOTIMP, BADVERS for an
unknown EDNS version), names outside the cluster domain (forwarded upstream, or REFUSED when there is no
upstream) and ExternalName answers whose target an upstream must resolve. It runs on the serving loop, one
task per query, so a slow upstream holds up nothing else.
"""

from __future__ import annotations

from dataclasses import dataclass

import dnslib

from kubeplane.dns.answers import AnswerTable
from kubeplane.dns.forward import Forwarder
from kubeplane.dns.lookup import FORMERR, NOTIMP, REFUSED, SERVFAIL, Answer, lookup
from kubeplane.dns.metrics import DnsMetrics
from kubeplane.dns.wire import (
    OUR_UDP_PAYLOAD,
    PLAIN_UDP_LIMIT,
    TCP_LIMIT,
    error_response,
    pack_reply,
    parse_question,
    question_bounds,
    reply_to,
    truncated_response,
)

BADVERS = 16
DO_IN_TTL = 0x8000  # the DO bit within an OPT record's TTL field (RFC 3225)


@dataclass(frozen=True)
class Reply:
    """A response (None: send nothing) and how the metrics label it."""

    wire: bytes | None
    rcode: int
    zone: str
    plugin: str


class SlowPath:
    """Answers queries in full; the server sets `forwarder` (None: no upstream) as configuration changes."""

    def __init__(self, metrics: DnsMetrics) -> None:
        self.metrics = metrics
        self.forwarder: Forwarder | None = None

    async def answer(self, table: AnswerTable, query: bytes, via_tcp: bool) -> Reply:
        """The reply to `query`, which `table`'s fast path missed."""
        origin = table.zone.origin
        question = parse_question(query)
        if question is not None:
            computed = table.compute(question)
            if computed is not None and computed.template is not None:
                self.metrics.cache_miss()
                wire = computed.template.render(query, question.end)
                if not via_tcp and len(wire) > question.payload:
                    wire = truncated_response(query, question.end, question.edns)
                return Reply(wire, computed.template.rcode, origin, "kubernetes")
        try:
            parsed = dnslib.DNSRecord.parse(query)
        except Exception:  # dnslib raises many unrelated types on garbage; all mean "malformed"
            return Reply(error_response(query, FORMERR), FORMERR, ".", "")
        if parsed.header.qr:
            return Reply(None, 0, ".", "")
        if parsed.header.opcode != 0:
            return Reply(error_response(query, NOTIMP), NOTIMP, ".", "")
        options = [rr for rr in parsed.ar if rr.rtype == dnslib.QTYPE.OPT]
        if len(parsed.questions) != 1 or len(options) > 1:
            return Reply(error_response(query, FORMERR), FORMERR, ".", "")
        limit = TCP_LIMIT if via_tcp else PLAIN_UDP_LIMIT
        edns: str | None = None  # None without EDNS, else the OPT flags we answer with (DO copied)
        if options:
            edns = "do" if options[0].ttl & DO_IN_TTL else ""
            if (options[0].ttl >> 16) & 0xFF:
                return Reply(_badvers(parsed, edns), BADVERS, ".", "")
            limit = TCP_LIMIT if via_tcp else max(PLAIN_UDP_LIMIT, options[0].rclass)
        parsed.ar = []
        answer = lookup(table.zone, str(parsed.q.qname), parsed.q.qtype) if parsed.q.qclass == 1 else None
        if answer is not None:
            self.metrics.cache_miss()
            reply = await self._finish_in_zone(parsed, answer)
            return Reply(_fit(reply, edns, limit), reply.header.rcode, origin, "kubernetes")
        if self.forwarder is None:
            refused = reply_to(parsed, aa=False)
            refused.header.rcode = REFUSED
            return Reply(_fit(refused, edns, limit), REFUSED, ".", "")
        result = await self.forwarder.resolve(parsed)
        if result is None:
            failed = reply_to(parsed, aa=False)
            failed.header.rcode = SERVFAIL
            return Reply(_fit(failed, edns, limit), SERVFAIL, ".", "forward")
        if result.from_cache:
            self.metrics.cache_hit(result.response.header.rcode, not result.response.rr)
        else:
            self.metrics.cache_miss()
        return Reply(_fit(result.response, edns, limit), result.response.header.rcode, ".", "forward")

    async def _finish_in_zone(self, parsed: dnslib.DNSRecord, answer: Answer) -> dnslib.DNSRecord:
        """Pack an in-zone answer, first resolving an external CNAME target upstream when one is set up."""
        if answer.chase is None or self.forwarder is None:
            return pack_reply(parsed, answer)
        target = dnslib.DNSRecord(
            dnslib.DNSHeader(id=parsed.header.id), q=dnslib.DNSQuestion(answer.chase, parsed.q.qtype)
        )
        result = await self.forwarder.resolve(target)
        extra = list(result.response.rr) if result is not None else []
        return pack_reply(parsed, answer, extra)


def _fit(reply: dnslib.DNSRecord, edns: str | None, limit: int) -> bytes:
    """Pack `reply`, adding our OPT with flags `edns` when the query had one (None: it had none); if over
    `limit`, an empty reply with TC."""
    if edns is not None:
        reply.add_ar(dnslib.EDNS0(udp_len=OUR_UDP_PAYLOAD, flags=edns))
    wire = bytes(reply.pack())
    if len(wire) <= limit:
        return wire
    truncated = dnslib.DNSRecord(reply.header, questions=reply.questions)
    truncated.header.tc = 1
    if edns is not None:
        truncated.add_ar(dnslib.EDNS0(udp_len=OUR_UDP_PAYLOAD, flags=edns))
    return bytes(truncated.pack())


def _badvers(parsed: dnslib.DNSRecord, edns: str) -> bytes:
    """RFC 6891: an unknown EDNS version gets BADVERS (extended rcode 1 in the OPT, header rcode 0)."""
    reply = reply_to(parsed, aa=False)
    reply.ar = []
    reply.add_ar(dnslib.EDNS0(udp_len=OUR_UDP_PAYLOAD, ext_rcode=BADVERS >> 4, flags=edns))
    return bytes(reply.pack())


def qtype_of(query: bytes) -> int:
    """The question type of a plain query, or 0 (counted as "other") when there is no plain question."""
    bounds = question_bounds(query)
    return (query[bounds[0] + 1] << 8) | query[bounds[0] + 2] if bounds is not None else 0
