"""The packed-answer fast path: question parsing, template rendering, and agreement with the full lookup."""

from __future__ import annotations

import struct

import dns.edns
import dns.flags
import dns.message
import dns.rcode
import dns.rdatatype
import dnslib
import pytest
from dns_fixtures import WEB, query_wire, shop_cluster, table_wire

from kubeplane.dns.answers import AnswerTable, decode_name, encode_name
from kubeplane.dns.lookup import lookup
from kubeplane.dns.wire import Question, pack_reply, parse_question
from kubeplane.dns.zone import build_zone
from kubeplane.model.objects import Cluster


def table_for(endpoints: int = 3) -> AnswerTable:
    return AnswerTable(build_zone(shop_cluster(endpoints), serial=7), chase_upstream=False)


def serve(table: AnswerTable, query: bytes, via_tcp: bool = False) -> dns.message.Message:
    """The table's answer, computing and remembering it first when it is not there yet."""
    wire = table_wire(table, query, via_tcp)
    assert wire is not None
    return dns.message.from_wire(wire)


def test_rendered_answer_carries_query_id_case_and_rd() -> None:
    reply = serve(table_for(), query_wire("WeB.Shop.SVC.cluster.local.", flags=dns.flags.RD))
    assert reply.id == 0xBEEF
    assert reply.flags & dns.flags.RD and reply.flags & dns.flags.AA and reply.flags & dns.flags.QR
    assert str(reply.question[0].name) == "WeB.Shop.SVC.cluster.local."
    assert [str(rrset.name) for rrset in reply.answer] == ["WeB.Shop.SVC.cluster.local."]
    assert [rr.address for rr in reply.answer[0]] == ["10.96.0.20"]


def test_rendered_answer_echoes_cd_and_leaves_rd_clear_when_not_asked() -> None:
    reply = serve(table_for(), query_wire("web.shop.svc.cluster.local.", flags=dns.flags.CD))
    assert reply.flags & dns.flags.CD
    assert not reply.flags & dns.flags.RD


def test_edns_query_gets_an_opt_record_and_plain_query_none() -> None:
    table = table_for()
    assert serve(table, query_wire("web.shop.svc.cluster.local.", edns=0)).edns == 0
    assert serve(table, query_wire("web.shop.svc.cluster.local.")).edns == -1


@pytest.mark.parametrize("rdtype", ["A", "AAAA", "SRV", "TXT", "MX", "PTR", "NS", "SOA", "CNAME"])
@pytest.mark.parametrize(
    "name",
    [
        "web.shop.svc.cluster.local.",
        "_http._tcp.web.shop.svc.cluster.local.",
        "db.shop.svc.cluster.local.",
        "nope.shop.svc.cluster.local.",
        "10-244-1-1.shop.pod.cluster.local.",
        "dns-version.cluster.local.",
        "cluster.local.",
        "20.0.96.10.in-addr.arpa.",
        "ext.shop.svc.cluster.local.",
    ],
)
def test_fast_path_agrees_with_dnslib_packing_of_the_same_lookup(name: str, rdtype: str) -> None:
    table = table_for()
    fast = serve(table, query_wire(name, rdtype))
    qtype = int(dns.rdatatype.from_text(rdtype))
    answer = lookup(table.zone, name, qtype)
    assert answer is not None
    full = dns.message.from_wire(bytes(pack_reply(dnslib.DNSRecord.question(name, rdtype), answer).pack()))
    assert fast.rcode() == full.rcode()
    assert sorted(map(str, fast.answer)) == sorted(map(str, full.answer))
    assert sorted(map(str, fast.authority)) == sorted(map(str, full.authority))
    assert sorted(map(str, fast.additional)) == sorted(map(str, full.additional))


def test_negative_answers_are_remembered_after_first_use() -> None:
    table = table_for()
    query = query_wire("nope.shop.svc.cluster.local.")
    assert table.answer(query, via_tcp=False) is None
    assert serve(table, query).rcode() == dns.rcode.NXDOMAIN
    assert table.answer(query, via_tcp=False) is not None


def test_remembered_answers_are_bounded_and_precomputed_ones_kept() -> None:
    table = AnswerTable(build_zone(Cluster(services=(WEB,))), chase_upstream=False, max_remembered=8)
    precomputed = len(table.plain)
    for index in range(20):
        serve(table, query_wire(f"miss{index}.shop.svc.cluster.local."))
    assert len(table.plain) <= precomputed + 8
    assert table.answer(query_wire("web.shop.svc.cluster.local."), via_tcp=False) is not None


def test_large_answer_over_plain_udp_is_truncated_and_complete_over_tcp() -> None:
    table = table_for(endpoints=60)
    query = query_wire("db.shop.svc.cluster.local.")
    udp = serve(table, query)
    assert udp.flags & dns.flags.TC
    assert udp.answer == []
    tcp = serve(table, query, via_tcp=True)
    assert not tcp.flags & dns.flags.TC
    assert len(tcp.answer[0]) == 60


def test_edns_payload_size_lets_a_large_answer_through_udp() -> None:
    table = table_for(endpoints=60)
    small = serve(table, query_wire("db.shop.svc.cluster.local.", edns=0, payload=512))
    assert small.flags & dns.flags.TC and small.edns == 0
    large = serve(table, query_wire("db.shop.svc.cluster.local.", edns=0, payload=4096))
    assert not large.flags & dns.flags.TC
    assert len(large.answer[0]) == 60


def edit(query: bytes, offset: int, value: bytes) -> bytes:
    return query[:offset] + value + query[offset + len(value) :]


@pytest.mark.parametrize(
    "mangle",
    [
        pytest.param(lambda q: q[:10], id="short"),
        pytest.param(lambda q: edit(q, 2, b"\x80"), id="response-bit"),
        pytest.param(lambda q: edit(q, 2, b"\x28"), id="opcode-update"),
        pytest.param(lambda q: edit(q, 4, b"\x00\x02"), id="two-questions"),
        pytest.param(lambda q: q + b"\x00", id="trailing-byte"),
        pytest.param(lambda q: edit(q, 6, b"\x00\x01"), id="answer-in-query"),
    ],
)
def test_parse_question_rejects_anything_but_a_plain_query(mangle: object) -> None:
    query = query_wire("web.shop.svc.cluster.local.")
    assert callable(mangle)
    assert parse_question(mangle(query)) is None
    assert table_for().answer(mangle(query), via_tcp=False) is None


def test_parse_question_rejects_unknown_edns_version() -> None:
    query = query_wire("web.shop.svc.cluster.local.", edns=1)
    assert parse_question(query) is None
    assert table_for().answer(query, via_tcp=False) is None


def test_parse_question_reads_type_and_payload() -> None:
    query = query_wire("Web.shop.svc.cluster.local.", "SRV", edns=0, payload=4096)
    name = encode_name("web.shop.svc.cluster.local.")
    end = 12 + len(name) + 4
    assert parse_question(query) == Question(name + struct.pack("!HH", 33, 1), end, 33, True, 4096)


def test_names_round_trip_and_odd_labels_are_refused() -> None:
    assert decode_name(encode_name("web.shop.svc.cluster.local.")) == "web.shop.svc.cluster.local."
    assert decode_name(b"\x03a.b\x05local\x00") is None
    assert decode_name(b"\x02\x01\x01\x05local\x00") is None
    assert decode_name(b"\x50web\x05local\x00") is None
    assert decode_name(b"\x03web\x05local") is None


def test_malformed_name_behind_a_plain_header_misses_the_table() -> None:
    table = table_for()
    query = query_wire("web.shop.svc.cluster.local.")
    mangled = query[:12] + b"\x50" + query[13:]
    question = parse_question(mangled)
    assert question is not None
    assert table.answer(mangled, False) is None
    assert table.compute(question) is None


def test_udp_answers_are_kept_by_exact_query_bytes_for_repeats() -> None:
    table = table_for()
    query = query_wire("Web.shop.svc.cluster.local.", flags=dns.flags.RD)
    hit = table.answer(query, via_tcp=False)
    assert hit is not None
    assert table.seen_udp[query[2:]] == (hit[0][2:], hit[1])
    other_case = query_wire("WEB.shop.svc.cluster.local.", flags=dns.flags.RD)
    assert other_case[2:] not in table.seen_udp
    table.answer(query, via_tcp=True)
    assert len(table.seen_udp) == 1


def test_queries_with_edns_options_are_not_kept() -> None:
    table = table_for()
    message = dns.message.make_query("web.shop.svc.cluster.local.", "A", use_edns=0)
    message.use_edns(0, options=[dns.edns.GenericOption(dns.edns.COOKIE, b"12345678")])
    hit = table.answer(message.to_wire(), via_tcp=False)
    assert hit is not None and dns.message.from_wire(hit[0]).answer
    assert table.seen_udp == {}


@pytest.mark.parametrize(
    ("name", "rdtype"),
    [
        ("web.shop.svc.cluster.local.", "A"),  # packed in advance
        ("nope.shop.svc.cluster.local.", "A"),  # packed on first use
        ("web.shop.svc.cluster.local.", "MX"),  # NODATA
    ],
)
def test_do_bit_of_the_query_is_copied_into_our_opt_record(name: str, rdtype: str) -> None:
    table = table_for()
    with_do = serve(table, query_wire(name, rdtype, do=True))
    without_do = serve(table, query_wire(name, rdtype, edns=0))
    repeated = serve(table, query_wire(name, rdtype, do=True))
    assert with_do.ednsflags & dns.flags.DO and repeated.ednsflags & dns.flags.DO
    assert with_do.edns == without_do.edns == 0
    assert not without_do.ednsflags & dns.flags.DO
    assert with_do.answer == without_do.answer and with_do.authority == without_do.authority


def test_truncated_answer_copies_the_do_bit() -> None:
    table = table_for(endpoints=60)
    truncated = serve(table, query_wire("db.shop.svc.cluster.local.", do=True, payload=512))
    assert truncated.flags & dns.flags.TC
    assert truncated.ednsflags & dns.flags.DO
