"""Forwarder: upstream address parsing and the TTL-honouring positive/negative cache (fake clock)."""

from __future__ import annotations

import dnslib
import pytest

from kubeplane.dns.fake_upstream import NEGATIVE_TTL, FakeUpstream
from kubeplane.dns.forward import Forwarder, Upstream, UpstreamAddressError, parse_upstream


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("192.0.2.1", Upstream("192.0.2.1", 53)),
        ("192.0.2.1:5353", Upstream("192.0.2.1", 5353)),
        ("2001:db8::1", Upstream("2001:db8::1", 53)),
        ("[2001:db8::1]:5353", Upstream("2001:db8::1", 5353)),
    ],
)
def test_upstream_addresses_parse(text: str, expected: Upstream) -> None:
    assert parse_upstream(text) == expected


@pytest.mark.parametrize("text", ["dns.google", "192.0.2.1:0", "192.0.2.1:x", "[2001:db8::1]x"])
def test_bad_upstream_addresses_are_rejected(text: str) -> None:
    with pytest.raises(UpstreamAddressError):
        parse_upstream(text)


async def test_cached_answer_counts_its_ttl_down_and_expires() -> None:
    clock = FakeClock()
    async with FakeUpstream({"a.example.": ("192.0.2.1",)}, ttl=30) as upstream:
        forwarder = Forwarder([parse_upstream(upstream.address)], timeout=1.0, clock=clock)
        first = await forwarder.resolve(dnslib.DNSRecord.question("a.example."))
        clock.now += 10
        second = await forwarder.resolve(dnslib.DNSRecord.question("A.Example."))
        clock.now += 25
        third = await forwarder.resolve(dnslib.DNSRecord.question("a.example."))
    assert first is not None and second is not None and third is not None
    assert (first.from_cache, second.from_cache, third.from_cache) == (False, True, False)
    assert second.response.rr[0].ttl == 20
    assert str(second.response.q.qname) == "A.Example."
    assert len(upstream.received) == 2


async def test_negative_answer_is_cached_for_the_soa_negative_ttl() -> None:
    clock = FakeClock()
    async with FakeUpstream({}) as upstream:
        forwarder = Forwarder([parse_upstream(upstream.address)], timeout=1.0, clock=clock)
        await forwarder.resolve(dnslib.DNSRecord.question("gone.example."))
        clock.now += NEGATIVE_TTL - 1
        cached = await forwarder.resolve(dnslib.DNSRecord.question("gone.example."))
        clock.now += 2
        refreshed = await forwarder.resolve(dnslib.DNSRecord.question("gone.example."))
    assert cached is not None and cached.from_cache and cached.response.header.rcode == 3
    assert refreshed is not None and not refreshed.from_cache
    assert len(upstream.received) == 2


async def test_no_answer_from_any_upstream_is_none_and_not_cached() -> None:
    async with FakeUpstream({}, silent=True) as upstream:
        forwarder = Forwarder([parse_upstream(upstream.address)], timeout=0.1)
        assert await forwarder.resolve(dnslib.DNSRecord.question("a.example.")) is None
        assert await forwarder.resolve(dnslib.DNSRecord.question("a.example.")) is None
    assert len(upstream.received) == 2
