"""Incremental zone and answer updates equal a full rebuild, and touch only what a change concerns."""

from __future__ import annotations

import asyncio
import dataclasses
import functools
import random
import threading

import dns.flags
import dns.message
import dns.rcode
import pytest
from dns_changes import NAMESPACES, random_edit
from dns_fixtures import DB, EXT, WEB, db_slice, query_wire, shop_cluster, table_wire

from kubeplane.daemon.cluster_dns import follow_store_for_dns
from kubeplane.dns.answers import AnswerTable
from kubeplane.dns.records import RecordType, reverse_name
from kubeplane.dns.server import DnsServer
from kubeplane.dns.updates import PreparedUpdate, ZoneUpdater
from kubeplane.dns.zone import build_zone
from kubeplane.dns.zone_builder import ZoneBuilder
from kubeplane.model.objects import (
    Cluster,
    KubeplaneConfiguration,
    Namespace,
    ObjectMeta,
    Service,
    ServicePort,
)
from kubeplane.store import ClusterStore, diff_clusters

PROBE_TYPES = ("A", "AAAA", "SRV", "PTR", "MX")


class SteppingClock:
    """A serial source that moves one second per update, so every update changes the SOA serial."""

    def __init__(self) -> None:
        self.now = 1_700_000_000

    def __call__(self) -> float:
        self.now += 1
        return self.now


def install(table: AnswerTable, prepared: PreparedUpdate | None) -> AnswerTable:
    """What the server does with a prepared update."""
    if prepared is None:
        return table
    if prepared.table is not None:
        return prepared.table
    table.apply(prepared.delta, prepared.packed)
    return table


def probe_names(*tables: AnswerTable) -> list[str]:
    """Every name either zone holds, plus names that do not exist or exist only as pod names."""
    names = set()
    for table in tables:
        names.update(table.zone.records)
        names.update(table.zone.empty_names)
    for namespace in NAMESPACES:
        names.add(f"web.{namespace}.svc.cluster.local.")
        names.add(f"web.{namespace}.svc.cluster.local.cluster.local.")
        names.update(f"10-244-1-{i}.{namespace}.pod.cluster.local." for i in (1, 2, 3))
        names.add(f"{namespace}.pod.cluster.local.")
    names.add("nothing.cluster.local.")
    return sorted(names)


@functools.cache
def probe_wire(name: str, rdtype: str, edns: bool) -> bytes:
    return query_wire(name, rdtype, edns=0 if edns else -1, payload=4096, flags=dns.flags.RD)


def responses(table: AnswerTable, names: list[str]) -> dict[tuple[str, str, bool], bytes | None]:
    """The table's UDP response to each probe with and without EDNS, as the server's UDP path gives it: a
    repeated query from `seen_udp`, else from the table."""
    answers: dict[tuple[str, str, bool], bytes | None] = {}
    for name in names:
        for rdtype in PROBE_TYPES:
            for edns in (False, True):
                query = probe_wire(name, rdtype, edns)
                repeat = table.seen_udp.get(query[2:])
                wire = query[:2] + repeat[0] if repeat is not None else table_wire(table, query)
                answers[(name, rdtype, edns)] = wire
    return answers


@pytest.mark.parametrize("seed", range(12))
def test_incremental_zone_equals_full_build_after_every_random_edit(seed: int) -> None:
    rng = random.Random(seed)
    cluster = Cluster()
    builder = ZoneBuilder(cluster, serial=1)
    for step in range(60):
        edited = random_edit(rng, cluster)
        builder.apply(edited, diff_clusters(cluster, edited), serial=step // 4)
        cluster = edited
        assert builder.zone == build_zone(cluster, serial=step // 4), f"seed {seed} step {step}"


@pytest.mark.parametrize("pods_mode", ["insecure", "verified"])
@pytest.mark.parametrize("seed", range(4))
def test_incremental_answers_equal_a_fresh_table_after_every_random_edit(seed: int, pods_mode: str) -> None:
    """Probing between edits fills the table with remembered answers (negative ones, pod names), which
    each edit must drop or patch exactly; every edit moves the SOA serial."""
    rng = random.Random(seed)
    clock = SteppingClock()
    updater = ZoneUpdater(None, clock=clock)
    cluster = Cluster(kubeplane_config=KubeplaneConfiguration(dns_pods_mode=pods_mode))  # type: ignore[arg-type]
    table = install(AnswerTable(build_zone(cluster), False), updater.prepare(cluster))
    serial = clock.now
    for step in range(25):
        edited = random_edit(rng, cluster, config_edits=False)
        prepared = updater.prepare(edited, diff_clusters(cluster, edited))
        if prepared is not None:  # None: the edit changed nothing, and the serial stays
            serial = clock.now
        table = install(table, prepared)
        cluster = edited
        fresh = AnswerTable(build_zone(cluster, serial=serial), chase_upstream=False)
        names = probe_names(table, fresh)
        assert responses(table, names) == responses(fresh, names), f"seed {seed} step {step}"


def test_changing_one_service_touches_only_its_names_and_their_readers() -> None:
    cname_to_web = Service(
        ObjectMeta("alias", "shop"), type="ExternalName", external_name="web.shop.svc.cluster.local"
    )
    cluster = dataclasses.replace(shop_cluster(), services=(WEB, DB, EXT, cname_to_web))
    builder = ZoneBuilder(cluster, serial=5)
    moved = dataclasses.replace(WEB, cluster_ips=("10.96.0.99",))
    edited = dataclasses.replace(cluster, services=(moved, DB, EXT, cname_to_web))
    delta = builder.apply(edited, diff_clusters(cluster, edited), serial=5)
    assert delta.affected_names == {
        "web.shop.svc.cluster.local.",
        "_http._tcp.web.shop.svc.cluster.local.",
        "alias.shop.svc.cluster.local.",  # its CNAME answer carries web's address
        reverse_name("10.96.0.20"),
        reverse_name("10.96.0.99"),
    }
    assert not delta.full and not delta.serial_changed and not delta.pod_namespaces


def test_new_namespace_turns_remembered_nxdomains_into_nodata_and_pod_names() -> None:
    updater = ZoneUpdater(None, clock=SteppingClock())
    cluster = shop_cluster()
    table = install(AnswerTable(build_zone(cluster), False), updater.prepare(cluster))
    namespace_query = query_wire("tmp.svc.cluster.local.")
    pod_query = query_wire("10-244-9-9.tmp.pod.cluster.local.")
    before = [dns.message.from_wire(table_wire(table, q) or b"") for q in (namespace_query, pod_query)]
    edited = dataclasses.replace(cluster, namespaces=(Namespace(ObjectMeta("tmp")),))
    table = install(table, updater.prepare(edited))
    namespace_answer, pod_answer = (
        dns.message.from_wire(table_wire(table, q) or b"") for q in (namespace_query, pod_query)
    )
    assert [m.rcode() for m in before] == [dns.rcode.NXDOMAIN, dns.rcode.NXDOMAIN]
    assert namespace_answer.rcode() == dns.rcode.NOERROR and not namespace_answer.answer
    assert [rr.address for rr in pod_answer.answer[0]] == ["10.244.9.9"]


def test_new_serial_is_patched_into_remembered_negative_answers() -> None:
    table = AnswerTable(build_zone(shop_cluster(), serial=7), chase_upstream=False)
    query = query_wire("nope.shop.svc.cluster.local.", edns=0)
    table_wire(table, query)
    key = next(iter(table.plain.keys() - AnswerTable(table.zone, False).plain.keys()))
    patched = table.edns[key].with_serial(0x01020304)
    repacked = AnswerTable(build_zone(shop_cluster(), serial=0x01020304), chase_upstream=False)
    table_wire(repacked, query)
    assert patched == repacked.edns[key]
    assert table.plain[key].with_serial(7) == table.plain[key]


def test_slice_update_changes_headless_answers_and_ptrs_in_place() -> None:
    updater = ZoneUpdater(None, clock=SteppingClock())
    cluster = shop_cluster(db_endpoints=2)
    table = install(AnswerTable(build_zone(cluster), False), updater.prepare(cluster))
    table_wire(table, query_wire("10-244-1-3.db.shop.svc.cluster.local."))  # NXDOMAIN, remembered
    edited = dataclasses.replace(cluster, endpoint_slices=(db_slice(3),))
    prepared = updater.prepare(edited)
    assert prepared is not None and prepared.table is None  # updated in place, not rebuilt
    table = install(table, prepared)
    own = dns.message.from_wire(table_wire(table, query_wire("10-244-1-3.db.shop.svc.cluster.local.")) or b"")
    ptr = dns.message.from_wire(table_wire(table, query_wire("3.1.244.10.in-addr.arpa.", "PTR")) or b"")
    headless = dns.message.from_wire(table_wire(table, query_wire("db.shop.svc.cluster.local.")) or b"")
    assert [rr.address for rr in own.answer[0]] == ["10.244.1.3"]
    assert [str(rr.target) for rr in ptr.answer[0]] == ["10-244-1-3.db.shop.svc.cluster.local."]
    assert sorted(rr.address for rr in headless.answer[0]) == ["10.244.1.1", "10.244.1.2", "10.244.1.3"]


def test_configuration_change_rebuilds_everything() -> None:
    updater = ZoneUpdater(None)
    cluster = shop_cluster()
    updater.prepare(cluster)
    longer_ttl = dataclasses.replace(cluster.kubeplane_config, dns_ttl=30)
    prepared = updater.prepare(dataclasses.replace(cluster, kubeplane_config=longer_ttl))
    assert prepared is not None and prepared.delta.full and prepared.table is not None
    assert prepared.table.zone.records["web.shop.svc.cluster.local."][0].ttl == 30
    assert updater.prepare(dataclasses.replace(cluster, kubeplane_config=longer_ttl)) is None


async def test_update_from_a_worker_thread_is_served_when_it_returns() -> None:
    api = Service(ObjectMeta("api", "shop"), cluster_ips=("10.96.0.44",), ports=(ServicePort(80),))
    async with DnsServer(shop_cluster()) as server:
        threads: list[str] = []
        original = server.table.apply

        def record_thread(*args: object) -> None:
            threads.append(threading.current_thread().name)
            original(*args)  # type: ignore[arg-type]

        server.table.apply = record_thread  # type: ignore[method-assign]
        await asyncio.to_thread(
            server.update, dataclasses.replace(shop_cluster(), services=(WEB, DB, EXT, api))
        )
        hit = server.table.answer(query_wire("api.shop.svc.cluster.local."), via_tcp=False)
    assert threads == [threading.main_thread().name]
    assert hit is not None and dns.message.from_wire(hit[0]).answer[0][0].address == "10.96.0.44"


async def test_apply_follows_store_change_sets_in_place() -> None:
    store = ClusterStore(shop_cluster())
    async with DnsServer(store.cluster) as server:
        api = Service(ObjectMeta("api", "shop"), cluster_ips=("10.96.0.44",), ports=(ServicePort(80),))
        table = server.table
        await server.apply(store.replace(dataclasses.replace(store.cluster, services=(WEB, DB, EXT, api))))
        records = server.zone.records
    assert server.table is table  # updated in place
    assert [r.rtype for r in records["api.shop.svc.cluster.local."]] == [RecordType.A, RecordType.SRV]
    assert server.cluster is store.cluster


async def test_store_follower_serves_each_change_and_reports_its_version() -> None:
    store = ClusterStore(shop_cluster())
    published: list[int] = []
    api = Service(ObjectMeta("api", "shop"), cluster_ips=("10.96.0.44",), ports=(ServicePort(80),))
    async with DnsServer(store.cluster) as server:
        follower = asyncio.create_task(follow_store_for_dns(store, server, published.append))
        try:
            store.replace(dataclasses.replace(store.cluster, services=(WEB, DB, EXT, api)))
            for _ in range(200):
                if store.version in published:
                    break
                await asyncio.sleep(0.005)
            hit = server.table.answer(query_wire("api.shop.svc.cluster.local."), via_tcp=False)
        finally:
            follower.cancel()
            await asyncio.gather(follower, return_exceptions=True)
    assert published[-1] == store.version == 2
    assert hit is not None and dns.message.from_wire(hit[0]).answer[0][0].address == "10.96.0.44"
