"""The fast path's table of packed answers, kept in step with the zone one change at a time.

Every (name, type) the zone holds data for is packed in advance; negative answers (search-path expansions,
unknown names, NODATA types) and on-demand pod names are packed on first use and remembered, up to a bound.
When the zone changes, `apply` drops exactly the answers the change invalidates (see
`kubeplane.dns.zone_builder.ZoneDelta`) and installs the answers packed for the changed names: the answers
of the names a change touched or that read them, remembered pod names of namespaces that came or went (or,
in `verified` mode, whose pod addresses changed), and a new SOA serial patched into remembered negative
answers. Packing (`pack_names`) is pure and may run in a worker thread; `apply` runs on the serving loop,
`answer` and `compute` also on the UDP threads (kubeplane.dns.udp explains why that is safe).
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Iterable, Mapping
from dataclasses import dataclass

from kubeplane.dns.lookup import Answer, lookup
from kubeplane.dns.pack import PackError, pack_answer
from kubeplane.dns.records import Record, Soa
from kubeplane.dns.wire import (
    FLAG_CD,
    FLAG_RD,
    ONE_QUESTION,
    OPT_FLAG_DO,
    PLAIN_UDP_LIMIT,
    Question,
    Template,
    make_template,
    question_bounds,
    truncated_response,
)
from kubeplane.dns.zone import Zone
from kubeplane.dns.zone_builder import ZoneDelta

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


@dataclass(frozen=True)
class PackedAnswer:
    """One question's templates, for queries without and with EDNS."""

    key: bytes  # lowercased wire name + qtype + qclass
    plain: Template
    edns: Template


PackedNames = Mapping[str, tuple[PackedAnswer, ...]]


def pack_names(zone: Zone, names: Iterable[str], chase_upstream: bool) -> dict[str, tuple[PackedAnswer, ...]]:
    """The answers to every type each of `names` holds in `zone` (names without records give none).

    Pure: safe in a worker thread. Names the wire cannot carry are logged and skipped, as are answers that
    must first be completed upstream (a CNAME out of the zone when `chase_upstream`)."""
    packed: dict[str, tuple[PackedAnswer, ...]] = {}
    for name in names:
        records = zone.records.get(name)
        if not records:
            continue
        try:
            wire_name = encode_name(name)
        except NameEncodingError as error:
            log.warning("dns zone name skipped name=%s error=%s", name, error)
            continue
        answers = []
        for rtype in _types_of(records):
            key = wire_name + rtype.to_bytes(2, "big") + CLASS_IN
            try:
                computed = _pack(zone, key, name, rtype, chase_upstream)
            except (PackError, UnicodeEncodeError) as error:
                log.warning("dns answer skipped name=%s type=%d error=%s", name, rtype, error)
                continue
            if computed is not None and computed[1] is not None:
                answers.append(computed[1])
        packed[name] = tuple(answers)
    return packed


class AnswerTable:
    """Packed answers keyed by the lowercased wire question, one dict for plain and one for EDNS queries."""

    def __init__(
        self,
        zone: Zone,
        chase_upstream: bool,
        max_remembered: int = MAX_REMEMBERED,
        packed: PackedNames | None = None,
    ) -> None:
        """`packed`: `pack_names(zone, zone.records, chase_upstream)` when the caller made it already."""
        self.zone = zone
        self.chase_upstream = chase_upstream
        self._max_remembered = max_remembered
        self.plain: dict[bytes, Template] = {}
        self.edns: dict[bytes, Template] = {}
        # Answers packed on first use, by key and by name: the bound applies to them, and `apply` finds
        # them by name without walking the whole table.
        self._remembered: dict[bytes, str] = {}
        self._remembered_by_name: dict[str, list[bytes]] = {}
        # UDP responses minus their id, keyed by the query minus its id: a repeated query (same flags,
        # same spelling, same EDNS payload) is answered with one dict lookup and no parsing at all.
        self.seen_udp: dict[bytes, tuple[bytes, Template]] = {}
        # `compute` runs on the loop and on the UDP threads, `apply` on the loop: each holds this while it
        # changes the table, so an answer packed from one zone never lands after the switch to the next.
        self._lock = threading.Lock()
        self._install(packed if packed is not None else pack_names(zone, zone.records, chase_upstream))

    def answer(self, query: bytes, via_tcp: bool) -> tuple[bytes, Template] | None:
        """The hot path: the response to `query` if its question is in the table, else None.

        This is `wire.question_bounds` and `Template.render` written out in place: at 100k queries a second
        each function call costs a few percent. tests/unit/test_dns_fastpath.py checks both agree. Over UDP
        an answer larger than the client's limit (512, or its EDNS payload) becomes an empty reply with TC,
        and the client asks again over TCP; UDP answers are also kept in `seen_udp`.
        """
        seen = self.seen_udp  # before the template is read: see kubeplane.dns.udp on updates
        size = len(query)
        if size < 17 or query[2] & 0xF8 or query[4:11] != ONE_QUESTION:
            return None
        zero = query.find(0, 12)
        end = zero + 5
        if zero < 0 or end > size:
            return None
        if query[11] == 0 and end == size:
            template = self.plain.get(query[12 : zero + 1].lower() + query[zero + 1 : end])
            if template is None:
                return None
            tail = template.tail
            limit = PLAIN_UDP_LIMIT
        elif query[11] == 1 and question_bounds(query) is not None:
            template = self.edns.get(query[12 : zero + 1].lower() + query[zero + 1 : end])
            if template is None:
                return None
            tail = template.tail_do if query[end + 7] & OPT_FLAG_DO else template.tail
            limit = max(PLAIN_UDP_LIMIT, (query[end + 3] << 8) | query[end + 4])
        else:
            return None
        index = (query[2] & FLAG_RD) | ((query[3] & FLAG_CD) >> 3)
        wire = query[:2] + template.headers[index] + query[12:end] + tail
        if not via_tcp:
            if len(wire) > limit:
                wire = truncated_response(query, end, query[11] == 1)
            if size <= end + 11:  # no EDNS options: cookies would make every query unique
                if len(seen) >= MAX_SEEN_UDP:
                    seen.clear()
                seen[query[2:]] = (wire[2:], template)
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
        with self._lock:
            if len(self._remembered) >= self._max_remembered:
                for remembered_name in list(self._remembered_by_name):
                    self._forget(remembered_name)
            computed = _pack(self.zone, question.key, name, question.qtype, self.chase_upstream)
            if computed is None:
                return None
            answer, packed = computed
            if packed is None:
                return Computed(None, answer)
            self._put(packed)
            self._remembered[packed.key] = name
            self._remembered_by_name.setdefault(name, []).append(packed.key)
        return Computed(packed.edns if question.edns else packed.plain, answer)

    def apply(self, delta: ZoneDelta, packed: PackedNames) -> None:
        """Move to `delta.zone`, `packed` holding `pack_names(delta.zone, delta.affected_names, ...)`."""
        with self._lock:
            self._apply(delta, packed)

    def _apply(self, delta: ZoneDelta, packed: PackedNames) -> None:
        old_records = self.zone.records
        for name in delta.affected_names:
            self._forget(name)
            records = old_records.get(name)
            if records:
                self._drop_precomputed(name, records)
        if delta.pod_namespaces:
            for name in list(self._remembered_by_name):
                if _pod_namespace(name, self.zone.origin) in delta.pod_namespaces:
                    self._forget(name)
        self.zone = delta.zone
        self._install(packed)
        soa = delta.zone.soa.data
        if delta.serial_changed and isinstance(soa, Soa):
            serial = soa.serial
            for key in self._remembered:
                self.plain[key] = self.plain[key].with_serial(serial)
                self.edns[key] = self.edns[key].with_serial(serial)
        self.seen_udp = {}  # last, and a new dict rather than cleared: see kubeplane.dns.udp

    def _install(self, packed: PackedNames) -> None:
        for answers in packed.values():
            for answer in answers:
                self._put(answer)

    def _put(self, answer: PackedAnswer) -> None:
        self.plain[answer.key] = answer.plain
        self.edns[answer.key] = answer.edns

    def _forget(self, name: str) -> None:
        """Drop the answers remembered for `name`."""
        for key in self._remembered_by_name.pop(name, ()):
            del self._remembered[key]
            self.plain.pop(key, None)
            self.edns.pop(key, None)

    def _drop_precomputed(self, name: str, records: tuple[Record, ...]) -> None:
        try:
            wire_name = encode_name(name)
        except NameEncodingError:
            return
        for rtype in _types_of(records):
            key = wire_name + rtype.to_bytes(2, "big") + CLASS_IN
            self.plain.pop(key, None)
            self.edns.pop(key, None)


def _types_of(records: Iterable[Record]) -> list[int]:
    return sorted({int(record.rtype) for record in records})


def _pack(
    zone: Zone, key: bytes, name: str, qtype: int, chase_upstream: bool
) -> tuple[Answer, PackedAnswer | None] | None:
    """The answer to (`name`, `qtype`) and its templates (None when the answer must first be completed
    upstream); None when the name is not ours."""
    answer = lookup(zone, name, qtype)
    if answer is None:
        return None
    if answer.chase is not None and chase_upstream:
        return answer, None
    packed = pack_answer(name, qtype, answer)
    return answer, PackedAnswer(
        key,
        make_template(packed, len(key), qtype, answer.rcode, edns=False),
        make_template(packed, len(key), qtype, answer.rcode, edns=True),
    )


def _pod_namespace(name: str, origin: str) -> str | None:
    """The namespace of a pod name `<label>.<namespace>.pod.<origin>`, else None."""
    if not name.endswith(".pod." + origin):
        return None
    labels = name[: -len(origin) - 5].split(".")
    return labels[1] if len(labels) == 2 else None


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
