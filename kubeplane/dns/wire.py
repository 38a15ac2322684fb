"""DNS wire format: the hand-written question parser of the hot path, response packing, and answer templates.

A template is a packed response whose question is the lowercased name: answer owner names are compressed to a
pointer at the question (offset 12), so copying the client's question bytes over it echoes the client's case
in every owner name. Serving a template is byte slicing and concatenation; no DNS parsing beyond the question.
"""

from __future__ import annotations

import struct
from collections.abc import Sequence
from typing import NamedTuple

import dnslib

from kubeplane.dns.lookup import Answer
from kubeplane.dns.records import Address, NamedRecord, RecordType, Soa, Srv, Target, Text

OUR_UDP_PAYLOAD = 1232  # the EDNS buffer size we advertise (DNS flag day 2020)
PLAIN_UDP_LIMIT = 512
TCP_LIMIT = 65535
OPT_TYPE = 41
# Our OPT pseudo-record: root owner, type OPT, class = our payload size, no extended rcode/flags, no data.
OPT_RECORD = b"\x00" + struct.pack("!HHIH", OPT_TYPE, OUR_UDP_PAYLOAD, 0, 0)
OPT_FLAG_DO = 0x80  # DNSSEC OK: the high bit of the OPT record's flags, byte 7 of the record
OPT_RECORD_DO = b"\x00" + struct.pack("!HHIH", OPT_TYPE, OUR_UDP_PAYLOAD, OPT_FLAG_DO << 8, 0)
OPT_HEAD = b"\x00\x00" + bytes((OPT_TYPE,))  # root owner name, then type OPT
FLAG_QR, FLAG_AA, FLAG_TC, FLAG_RD = 0x80, 0x04, 0x02, 0x01  # in byte 2 of the header
FLAG_RA, FLAG_CD = 0x80, 0x10  # in byte 3


class Question(NamedTuple):
    """What the hot path reads from a query: the lookup key and where the question ends."""

    key: bytes  # lowercased wire name + qtype + qclass
    end: int  # offset just past qclass
    qtype: int
    edns: bool
    payload: int  # the client's UDP limit: 512 without EDNS


ONE_QUESTION = b"\x00\x01\x00\x00\x00\x00\x00"  # qdcount 1, ancount 0, nscount 0, arcount high byte 0


def question_bounds(query: bytes) -> tuple[int, int, int] | None:
    """Where the single question of a plain query lies: (offset of the name's root label, offset past
    qclass, the client's EDNS payload or 0 without EDNS); None for anything but opcode QUERY with QR clear,
    one question and at most one OPT record of EDNS version 0, without trailing bytes.

    The name ends at its first zero byte; its labels are not walked here. That is safe for lookups: a key
    equal to a name the zone built is well-formed itself (lowercasing never creates a byte below 64, where
    all length bytes lie). Whoever decodes a key that missed must check it (`answers.decode_name` does).
    """
    size = len(query)
    if size < 17 or query[2] & 0xF8 or query[4:11] != ONE_QUESTION:
        return None
    zero = query.find(0, 12)
    end = zero + 5
    if zero < 0 or end > size:
        return None
    arcount = query[11]
    if arcount == 0:
        return (zero, end, 0) if end == size else None
    if arcount != 1 or size < end + 11 or query[end : end + 3] != OPT_HEAD or query[end + 6]:
        return None
    if end + 11 + ((query[end + 9] << 8) | query[end + 10]) != size:
        return None
    return zero, end, max(PLAIN_UDP_LIMIT, (query[end + 3] << 8) | query[end + 4])


def parse_question(query: bytes) -> Question | None:
    """The question of a plain query (see `question_bounds`) with its lookup key; None otherwise."""
    bounds = question_bounds(query)
    if bounds is None:
        return None
    zero, end, payload = bounds
    key = query[12 : zero + 1].lower() + query[zero + 1 : end]
    qtype = (query[zero + 1] << 8) | query[zero + 2]
    return Question(key, end, qtype, payload != 0, payload or PLAIN_UDP_LIMIT)


class Template(NamedTuple):
    """A response minus the id and the question, with the header flags precomputed per RD/CD combination.

    EDNS templates carry two tails, our OPT record with and without the DO bit: RFC 3225 has the responder
    copy DO from the query. A negative answer ends with the zone's SOA, whose serial sits at `serial_at`
    in both tails (-1: no SOA there), so a new serial is patched in without packing the answer again.
    """

    headers: tuple[bytes, bytes, bytes, bytes]  # flags + counts, indexed by RD | CD << 1 of the query
    tail: bytes  # everything after the question (with our OPT, DO clear, in an EDNS template)
    tail_do: bytes  # the same with DO set in our OPT; equal to `tail` in a plain template
    rcode: int
    denial: bool  # NXDOMAIN or NODATA: what a cache counts as a denial rather than a success
    stat_key: int  # qtype << 8 | rcode << 1 | denial: what the metrics tally per answer
    serial_at: int

    def render(self, query: bytes, end: int) -> bytes:
        """The response to `query`, whose question ends at `end`: its id, RD/CD bits, question bytes and,
        when it carries an OPT record (which starts at `end`), its DO bit."""
        index = (query[2] & FLAG_RD) | ((query[3] & FLAG_CD) >> 3)
        tail = self.tail_do if len(query) > end + 7 and query[end + 7] & OPT_FLAG_DO else self.tail
        return query[:2] + self.headers[index] + query[12:end] + tail

    def with_serial(self, serial: int) -> Template:
        """This template with `serial` as the SOA serial (itself when it carries no SOA)."""
        at = self.serial_at
        if at < 0:
            return self
        value = serial.to_bytes(4, "big")
        return self._replace(
            tail=self.tail[:at] + value + self.tail[at + 4 :],
            tail_do=self.tail_do[:at] + value + self.tail_do[at + 4 :],
        )


def make_template(packed: bytes, question_length: int, qtype: int, rcode: int, edns: bool) -> Template:
    """Split a packed response (id 0, RD and CD clear) into a Template, appending our OPT if `edns`."""
    flags2, flags3 = packed[2], packed[3]
    counts = bytearray(packed[4:12])
    tail = packed[12 + question_length :]
    denial = rcode == 3 or counts[2:4] == b"\x00\x00"  # NXDOMAIN, or no answer records (NODATA)
    # A negative answer (lookup's `_negative`) holds exactly the SOA, in authority: its serial is 20 bytes
    # from the end (serial, refresh, retry, expire, minimum).
    only_soa = counts[2:8] == b"\x00\x00\x00\x01\x00\x00"  # ancount 0, nscount 1, arcount 0
    serial_at = len(tail) - 20 if denial and only_soa else -1
    tail_do = tail
    if edns:
        struct.pack_into("!H", counts, 6, struct.unpack_from("!H", counts, 6)[0] + 1)
        tail, tail_do = tail + OPT_RECORD, tail + OPT_RECORD_DO
    headers = tuple(
        bytes((flags2 | (index & FLAG_RD), flags3 | ((index >> 1) * FLAG_CD))) + bytes(counts)
        for index in range(4)
    )
    stat_key = qtype << 8 | rcode << 1 | denial
    return Template(
        (headers[0], headers[1], headers[2], headers[3]), tail, tail_do, rcode, denial, stat_key, serial_at
    )


def truncated_response(query: bytes, end: int, edns: bool) -> bytes:
    """An empty response with TC set to the question ending at `end`: the client retries over TCP."""
    flags2 = FLAG_QR | FLAG_AA | FLAG_TC | (query[2] & FLAG_RD)
    flags3 = FLAG_RA | (query[3] & FLAG_CD)
    header = query[:2] + bytes((flags2, flags3)) + struct.pack("!HHHH", 1, 0, 0, 1 if edns else 0)
    return header + query[12:end] + (opt_record(bool(query[end + 7] & OPT_FLAG_DO)) if edns else b"")


def opt_record(dnssec_ok: bool) -> bytes:
    """Our OPT record, echoing the query's DO bit (RFC 3225)."""
    return OPT_RECORD_DO if dnssec_ok else OPT_RECORD


def error_response(query: bytes, rcode: int) -> bytes | None:
    """A bare error reply (no question) for a query we cannot parse; None when not even the id is there."""
    if len(query) < 12 or query[2] & FLAG_QR:
        return None
    flags2 = FLAG_QR | (query[2] & 0x79)  # keep opcode and RD
    return query[:2] + bytes((flags2, FLAG_RA | rcode)) + bytes(8)


def reply_to(query: dnslib.DNSRecord, aa: bool) -> dnslib.DNSRecord:
    """An empty reply with the query's id, question, opcode, RD and CD; AD is cleared, since we validate
    nothing (RFC 6840 5.8), although dnslib's `reply` copies every flag of the query (dig sets AD)."""
    reply = query.reply(ra=1, aa=int(aa))
    reply.header.ad = 0
    return reply


def pack_reply(query: dnslib.DNSRecord, answer: Answer, extra: Sequence[dnslib.RR] = ()) -> dnslib.DNSRecord:
    """The reply to a fully parsed `query` (its id, flags and question as asked) carrying `answer`, plus
    `extra` answer records (an upstream's resolution of a CNAME target)."""
    reply = reply_to(query, aa=True)
    reply.header.rcode = answer.rcode
    for named in answer.answer:
        reply.add_answer(to_dnslib(named))
    reply.add_answer(*extra)
    for named in answer.authority:
        reply.add_auth(to_dnslib(named))
    for named in answer.additional:
        reply.add_ar(to_dnslib(named))
    return reply


def to_dnslib(named: NamedRecord) -> dnslib.RR:
    record = named.record
    data = record.data
    rdata: dnslib.RD
    if isinstance(data, Address):
        rdata = dnslib.A(data.ip) if record.rtype is RecordType.A else dnslib.AAAA(data.ip)
    elif isinstance(data, Target):
        rdata = {RecordType.CNAME: dnslib.CNAME, RecordType.PTR: dnslib.PTR, RecordType.NS: dnslib.NS}[
            record.rtype
        ](data.name)
    elif isinstance(data, Srv):
        rdata = dnslib.SRV(data.priority, data.weight, data.port, data.target)
    elif isinstance(data, Text):
        rdata = dnslib.TXT(data.text)
    elif isinstance(data, Soa):
        times = (data.serial, data.refresh, data.retry, data.expire, data.minimum)
        rdata = dnslib.SOA(data.mname, data.rname, times)
    return dnslib.RR(named.name, int(record.rtype), rdata=rdata, ttl=record.ttl)
