"""DNS metrics under CoreDNS's names, counted in plain integers and exported at scrape time.

prometheus_client's Counter and Histogram take a lock and walk buckets on every call, which costs more than
the whole fast path of a query; so the server counts into dicts and a custom collector, registered in the
registry the caller passes (the daemon's), turns the counts into metric families when /metrics is read.
Labels follow CoreDNS (`server`, `zone`, `view`, `proto`, `family`, `type`, `rcode`, `plugin`).
"""

from __future__ import annotations

import bisect
from collections.abc import Iterator

from prometheus_client import CollectorRegistry
from prometheus_client.core import CounterMetricFamily, HistogramMetricFamily, Metric
from prometheus_client.registry import Collector

# CoreDNS plugin.TimeBuckets: prometheus.ExponentialBuckets(0.00025, 2, 16), 250 µs .. ~8 s.
DURATION_BUCKETS = tuple(0.00025 * 2**i for i in range(16))
RCODE_NAMES = {0: "NOERROR", 1: "FORMERR", 2: "SERVFAIL", 3: "NXDOMAIN", 4: "NOTIMP", 5: "REFUSED"}
TYPE_NAMES = {1: "A", 2: "NS", 5: "CNAME", 6: "SOA", 12: "PTR", 15: "MX", 16: "TXT", 28: "AAAA", 33: "SRV"}
TYPE_NAMES |= {65: "HTTPS", 255: "ANY"}


class FastCounts:
    """Tallies of table answers on one listener, as flat ints keyed by `Template.stat_key`.

    The fast path records here (one dict update and one bucket increment); DnsMetrics folds these into the
    CoreDNS series at scrape time, under the zone the server currently serves.
    """

    def __init__(self, proto: str, family: str) -> None:
        self.proto = proto
        self.family = family
        self.answers: dict[int, int] = {}
        self.durations: dict[int, list[float]] = {}  # qtype -> bucket counts + [sum]
        self.packed: dict[int, int] = {}  # those of `answers` packed on first use: cache misses, not hits

    def buckets_for(self, qtype: int) -> list[float]:
        """The duration histogram of `qtype`: one count per bucket, then +Inf, then the sum."""
        return self.durations.setdefault(qtype, [0.0] * (len(DURATION_BUCKETS) + 2))

    def record(self, stat_key: int, seconds: float) -> None:
        answers = self.answers
        answers[stat_key] = answers.get(stat_key, 0) + 1
        buckets = self.durations.get(stat_key >> 8) or self.buckets_for(stat_key >> 8)
        buckets[bisect.bisect_left(DURATION_BUCKETS, seconds)] += 1
        buckets[-1] += seconds


class DnsMetrics(Collector):
    """Request, response, latency and cache counters of one DNS server."""

    def __init__(self, registry: CollectorRegistry | None = None, server: str = "dns://:53") -> None:
        self.server = server
        self._requests: dict[tuple[str, str, str, str], int] = {}  # (zone, proto, family, type)
        self._responses: dict[tuple[str, str, str], int] = {}  # (zone, rcode, plugin)
        self._durations: dict[tuple[str, str], list[float]] = {}  # (zone, type) -> bucket counts + [sum]
        self._cache_hits: dict[str, int] = {"success": 0, "denial": 0}
        self._cache_misses = 0
        self._fast: list[FastCounts] = []
        self.cluster_zone = "cluster.local."
        if registry is not None:
            registry.register(self)

    def observe(
        self, zone: str, proto: str, family: str, qtype: int, rcode: int, plugin: str, seconds: float
    ) -> None:
        """Count one answered request; `family` is "1" (IPv4) or "2" (IPv6) as in CoreDNS."""
        type_name = TYPE_NAMES.get(qtype, "other")
        key = (zone, proto, family, type_name)
        self._requests[key] = self._requests.get(key, 0) + 1
        response_key = (zone, RCODE_NAMES.get(rcode, str(rcode)), plugin)
        self._responses[response_key] = self._responses.get(response_key, 0) + 1
        buckets = self._durations.get((zone, type_name))
        if buckets is None:
            buckets = self._durations[(zone, type_name)] = [0.0] * (len(DURATION_BUCKETS) + 2)
        buckets[bisect.bisect_left(DURATION_BUCKETS, seconds)] += 1
        buckets[-1] += seconds

    def cache_hit(self, rcode: int, empty: bool) -> None:
        """A response served from a cache: `denial` for NXDOMAIN or an empty NOERROR, else `success`."""
        self._cache_hits["denial" if rcode == 3 or empty else "success"] += 1

    def cache_miss(self) -> None:
        self._cache_misses += 1

    def fast_counts(self, proto: str, family: str) -> FastCounts:
        """A tally for one listener's table answers, included in every scrape from now on."""
        counts = FastCounts(proto, family)
        self._fast.append(counts)
        return counts

    def collect(self) -> Iterator[Metric]:
        requests_by_key = dict(self._requests)
        responses_by_key = dict(self._responses)
        durations_by_key = {key: list(counts) for key, counts in self._durations.items()}
        cache_hits = dict(self._cache_hits)
        cache_misses = self._cache_misses
        zone = self.cluster_zone
        for fast in self._fast:
            packed = dict(fast.packed)
            cache_misses += sum(packed.values())
            for stat_key, count in list(fast.answers.items()):
                type_name = TYPE_NAMES.get(stat_key >> 8, "other")
                rcode = RCODE_NAMES.get((stat_key >> 1) & 0x7F, "other")
                request_key = (zone, fast.proto, fast.family, type_name)
                requests_by_key[request_key] = requests_by_key.get(request_key, 0) + count
                response_key = (zone, rcode, "kubernetes")
                responses_by_key[response_key] = responses_by_key.get(response_key, 0) + count
                cache_hits["denial" if stat_key & 1 else "success"] += count - packed.get(stat_key, 0)
            for qtype, counts in list(fast.durations.items()):
                merged_key = (zone, TYPE_NAMES.get(qtype, "other"))
                merged = durations_by_key.setdefault(merged_key, [0.0] * len(counts))
                for index, value in enumerate(counts):
                    merged[index] += value
        yield from self._families(
            requests_by_key, responses_by_key, durations_by_key, cache_hits, cache_misses
        )

    def _families(
        self,
        requests_by_key: dict[tuple[str, str, str, str], int],
        responses_by_key: dict[tuple[str, str, str], int],
        durations_by_key: dict[tuple[str, str], list[float]],
        cache_hits: dict[str, int],
        cache_misses: int,
    ) -> Iterator[Metric]:
        requests = CounterMetricFamily(
            "coredns_dns_requests",
            "Counter of DNS requests made per zone, protocol and family.",
            labels=["server", "zone", "view", "proto", "family", "type"],
        )
        for (zone, proto, family, type_name), count in sorted(requests_by_key.items()):
            requests.add_metric([self.server, zone, "", proto, family, type_name], count)
        yield requests
        responses = CounterMetricFamily(
            "coredns_dns_responses",
            "Counter of response status codes.",
            labels=["server", "zone", "view", "rcode", "plugin"],
        )
        for (zone, rcode, plugin), count in sorted(responses_by_key.items()):
            responses.add_metric([self.server, zone, "", rcode, plugin], count)
        yield responses
        durations = HistogramMetricFamily(
            "coredns_dns_request_duration_seconds",
            "Histogram of the time (in seconds) each request took.",
            labels=["server", "zone", "view", "type"],
        )
        for (zone, type_name), counts in sorted(durations_by_key.items()):
            cumulative = 0.0
            buckets: list[tuple[str, float]] = []
            for bound, bucket_count in zip((*DURATION_BUCKETS, float("inf")), counts[:-1], strict=True):
                cumulative += bucket_count
                buckets.append(("+Inf" if bound == float("inf") else repr(bound), cumulative))
            durations.add_metric([self.server, zone, "", type_name], buckets, counts[-1])
        yield durations
        hits = CounterMetricFamily(
            "coredns_cache_hits", "The count of cache hits.", labels=["server", "type", "zones", "view"]
        )
        for kind, count in sorted(cache_hits.items()):
            hits.add_metric([self.server, kind, ".", ""], count)
        yield hits
        misses = CounterMetricFamily(
            "coredns_cache_misses", "The count of cache misses.", labels=["server", "zones", "view"]
        )
        misses.add_metric([self.server, ".", ""], cache_misses)
        yield misses
