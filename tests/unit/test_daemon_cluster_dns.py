"""The daemon's DNS follower: it lets the node proxies go first with a change, then serves it."""

from __future__ import annotations

import asyncio
import dataclasses

import dns.message
from dns_fixtures import DB, EXT, WEB, query_wire, shop_cluster

from kubeplane.daemon.cluster_dns import follow_store_for_dns
from kubeplane.dns.server import DnsServer
from kubeplane.model.objects import ObjectMeta, Service, ServicePort
from kubeplane.store import ClusterStore

API_NAME = "api.shop.svc.cluster.local."


async def test_follower_serves_a_change_only_after_before_apply_returns() -> None:
    store = ClusterStore(shop_cluster())
    published: list[int] = []
    asked: list[int] = []
    proxies_started = asyncio.Event()

    async def before_apply(version: int) -> None:
        asked.append(version)
        await proxies_started.wait()

    api = Service(ObjectMeta("api", "shop"), cluster_ips=("10.96.0.44",), ports=(ServicePort(80),))
    async with DnsServer(store.cluster) as server:
        follower = asyncio.create_task(follow_store_for_dns(store, server, published.append, before_apply))
        try:
            await asyncio.sleep(0.02)  # the follower's first item: the state the server was built from
            proxies_started.set()
            await asyncio.sleep(0.02)
            proxies_started.clear()
            store.replace(dataclasses.replace(store.cluster, services=(WEB, DB, EXT, api)))
            await asyncio.sleep(0.05)
            held = server.table.answer(query_wire(API_NAME), via_tcp=False)
            published_while_held = list(published)
            proxies_started.set()
            for _ in range(200):
                if store.version in published:
                    break
                await asyncio.sleep(0.005)
            served = server.table.answer(query_wire(API_NAME), via_tcp=False)
        finally:
            follower.cancel()
            await asyncio.gather(follower, return_exceptions=True)
    assert asked == [1, 2]
    assert store.version not in published_while_held
    assert held is None or not dns.message.from_wire(held[0]).answer  # the new name: not served yet
    assert published[-1] == store.version == 2
    assert served is not None and dns.message.from_wire(served[0]).answer[0][0].address == "10.96.0.44"
