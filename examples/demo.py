"""`make demo`: the shop example live, a pod curling a Service by name (DNS, DNAT, masquerade included).

Run as root from the repository root:  .venv/bin/python examples/demo.py

It starts kubeplane on examples/shop (lab, one iptables proxy per node, cluster DNS), then from pod
shop/frontend-1 resolves `backend` through the cluster DNS, fetches http://backend/ a few times (each answer
says which backend pod served it and the client address it saw), fetches the same Service from a pod on the
other node, and shows node-a's rules for that connection as `kubeplane trace` explains them. Everything it
creates is removed when it ends, Ctrl-C included.
"""

from __future__ import annotations

import asyncio
import os
import sys
from pathlib import Path

from kubeplane.daemon.app import Daemon, DaemonOptions
from kubeplane.netns.clients import http_get, resolve
from kubeplane.netns.names import pod_netns
from kubeplane.trace.cluster_trace import explain_in_cluster
from kubeplane.trace.packet import Packet
from kubeplane.trace.render_text import render_text

SHOP = Path(__file__).resolve().parent / "shop"
LAB = f"demo{os.getpid() % 10000}"


async def show_shop() -> None:
    async with Daemon(DaemonOptions(paths=(SHOP,), lab=LAB)) as daemon:
        await daemon.wait_programmed(daemon.store.version, timeout=60)
        cluster = daemon.store.cluster
        counts = f"{len(cluster.nodes)} nodes, {len(cluster.pods)} pods, {len(cluster.services)} services"
        print(f"lab {LAB}: {counts}")
        frontend = pod_netns(LAB, "shop", "frontend-1")
        address = await asyncio.to_thread(resolve, frontend, "backend")
        print(f"\nshop/frontend-1 resolves `backend` through the cluster DNS: {address}")
        for attempt in range(4):
            echo = await asyncio.to_thread(http_get, frontend, "http://backend/")
            print(f"  GET http://backend/ #{attempt + 1}: served by {echo['pod']} on {echo['node']}, "
                  f"client seen {echo['client']}")  # fmt: skip
        echo = await asyncio.to_thread(http_get, pod_netns(LAB, "shop", "backend-2"), "http://frontend/")
        print(f"  shop/backend-2 GET http://frontend/: served by {echo['pod']}, client seen {echo['client']}")
        source = next(p for p in cluster.pods if p.meta.key == "shop/frontend-1")
        packet = Packet(source.pod_ip or "", 40000, address, 80)
        explained = explain_in_cluster(cluster, source.node_name, packet)
        print(f"\nWhat {source.node_name}'s rules do with that connection (kubeplane trace):")
        print(render_text(explained, "minimal"))


def main() -> int:
    if os.geteuid() != 0:
        print("demo: run as root (it builds network namespaces)", file=sys.stderr)
        return 2
    asyncio.run(show_shop())
    return 0


if __name__ == "__main__":
    sys.exit(main())
