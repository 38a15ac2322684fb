"""The fast path's table of packed answers for one zone build.

Every (name, type) the zone holds data for is packed when the table is built; negative answers (search-path
expansions, unknown names, NODATA types) and on-demand pod names are packed on first use and remembered, up
to a bound. The server swaps the whole table on every zone rebuild, so invalidation is exact: no entry ever
outlives the zone it was computed from.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

from kubeplane.dns.lookup import Answer, lookup
from kubeplane.dns.pack import PackError, pack_answer
from kubeplane.dns.wire import (
    FLAG_CD,
    FLAG_RD,
    ONE_QUESTION,
    PLAIN_UDP_LIMIT,
    Question,
    Template,
    make_template,
    question_bounds,
    truncated_response,
)
from kubeplane.dns.zone import Zone

log = logging.getLogger(__name__)

CLASS_IN = b"\x00\x01"
MAX_REMEMBERED = 16384
MAX_SEEN_UDP = 16384


class NameEncodingError(ValueError):
    """A zone name that cannot be written as DNS labels (over-long label or name, non-ASCII)."""


@dataclass(frozen=True)
class Computed:
    """What the slow path learns for an in-zone question: a servable template, or an answer to finish."""

    template: Template | None
    answer: Answer


class AnswerTable:
    """Packed answers keyed by the lowercased wire question, one dict for plain and one for EDNS queries."""

    def __init__(self, zone: Zone, chase_upstream: bool, max_remembered: int = MAX_REMEMBERED) -> None:
        self.zone = zone
        self._chase_upstream = chase_upstream
        self._max_remembered = max_remembered
        self.plain: dict[bytes, Template] = {}
        self.edns: dict[bytes, Template] = {}
        for name, records in zone.records.items():
            try:
                wire_name = encode_name(name)
            except NameEncodingError as error:
                log.warning("dns zone name skipped name=%s error=%s", name, error)
                continue
            for rtype in sorted({r.rtype for r in records}):
                try:
                    self._compute(wire_name + int(rtype).to_bytes(2, "big") + CLASS_IN, name, int(rtype))
                except (PackError, UnicodeEncodeError) as error:
                    log.warning("dns answer skipped name=%s type=%s error=%s", name, rtype.name, error)
        self._eager_plain = dict(self.plain)
        self._eager_edns = dict(self.edns)
        # UDP responses minus their id, keyed by the query minus its id: a repeated query (same flags,
        # same spelling, same EDNS payload) is answered with one dict lookup and no parsing at all.
        self.seen_udp: dict[bytes, tuple[bytes, Template]] = {}

    def answer(self, query: bytes, via_tcp: bool) -> tuple[bytes, Template] | None:
        """The hot path: the response to `query` if its question is in the table, else None.

        This is `wire.question_bounds` and `Template.render` written out in place: at 100k queries a second
        each function call costs a few percent. tests/unit/test_dns_fastpath.py checks both agree. Over UDP
        an answer larger than the client's limit (512, or its EDNS payload) becomes an empty reply with TC,
        and the client asks again over TCP; UDP answers are also kept in `seen_udp`.
        """
        size = len(query)
        if size < 17 or query[2] & 0xF8 or query[4:11] != ONE_QUESTION:
            return None
        zero = query.find(0, 12)
        end = zero + 5
        if zero < 0 or end > size:
            return None
        if query[11] == 0 and end == size:
            template = self.plain.get(query[12 : zero + 1].lower() + query[zero + 1 : end])
            limit = PLAIN_UDP_LIMIT
        elif query[11] == 1 and question_bounds(query) is not None:
            template = self.edns.get(query[12 : zero + 1].lower() + query[zero + 1 : end])
            limit = max(PLAIN_UDP_LIMIT, (query[end + 3] << 8) | query[end + 4])
        else:
            return None
        if template is None:
            return None
        index = (query[2] & FLAG_RD) | ((query[3] & FLAG_CD) >> 3)
        wire = query[:2] + template.headers[index] + query[12:end] + template.tail
        if not via_tcp:
            if len(wire) > limit:
                wire = truncated_response(query, end, query[11] == 1)
            if size <= end + 11:  # no EDNS options: cookies would make every query unique
                if len(self.seen_udp) >= MAX_SEEN_UDP:
                    self.seen_udp.clear()
                self.seen_udp[query[2:]] = (wire[2:], template)
        return wire, template

    def compute(self, question: Question) -> Computed | None:
        """Answer and remember a question the fast path missed.

        None when no template can be made: the name is not in the zone, the class is not IN, or the name has
        labels text cannot carry; the server then answers from a full parse of the query.
        """
        if question.key[-2:] != CLASS_IN:
            return None
        name = decode_name(question.key[:-4])
        if name is None:
            return None
        if len(self.plain) >= len(self._eager_plain) + self._max_remembered:
            self.plain, self.edns = dict(self._eager_plain), dict(self._eager_edns)
        return self._compute(question.key, name, question.qtype)

    def _compute(self, key: bytes, name: str, qtype: int) -> Computed | None:
        answer = lookup(self.zone, name, qtype)
        if answer is None:
            return None
        if answer.chase is not None and self._chase_upstream:
            return Computed(None, answer)
        packed = pack_answer(name, qtype, answer)
        question_length = len(key)
        self.plain[key] = make_template(packed, question_length, qtype, answer.rcode, edns=False)
        self.edns[key] = make_template(packed, question_length, qtype, answer.rcode, edns=True)
        return Computed(self.plain[key], answer)


def encode_name(name: str) -> bytes:
    """`name` (absolute, lowercase) in wire form, uncompressed."""
    try:
        labels = [label.encode("ascii") for label in name.rstrip(".").split(".")] if name != "." else []
    except UnicodeEncodeError as error:
        raise NameEncodingError(f"non-ASCII name {name!r}") from error
    if any(not label or len(label) > 63 for label in labels):
        raise NameEncodingError(f"empty or over-long label in {name!r}")
    wire = b"".join(bytes((len(label),)) + label for label in labels) + b"\x00"
    if len(wire) > 255:
        raise NameEncodingError(f"name longer than 255 octets: {name!r}")
    return wire


def decode_name(wire: bytes) -> str | None:
    """The text form of an uncompressed wire name; None unless it is well-formed (label lengths up to 63,
    ending exactly at the root label) and every label is printable ASCII without dots."""
    labels: list[str] = []
    offset = 0
    while offset < len(wire) and wire[offset]:
        length = wire[offset]
        label = wire[offset + 1 : offset + 1 + length]
        if length > 63 or len(label) != length or b"." in label:
            return None
        if not label.isascii() or not label.decode("ascii").isprintable():
            return None
        labels.append(label.decode("ascii"))
        offset += 1 + length
    if offset != len(wire) - 1:
        return None
    return ".".join(labels) + "." if labels else "."
