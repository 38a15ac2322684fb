"""A packet's life, step by step: `curl web` from pod demo/client to the echo pod behind the Service `web`.

Run as root from the repository root (add --step to pause between steps):

    .venv/bin/python examples/packet-life/packet_life.py --step

It starts kubeplane on cluster.yaml (a lab of two nodes, the proxies, cluster DNS), then follows the packets
`curl web` sends, each time letting the kernel trace a real packet and comparing it with `kubeplane trace`'s
explanation of the rules:

  1. the DNS question: `web` becomes web.demo.svc.cluster.local, asked of 10.96.0.10 (the kube-dns Service),
     which node-a's rules DNAT to the DNS pod;
  2. before sending anything, what node-a's rules will do with the connection to web's ClusterIP (explain);
  3. the real connection: which web pod answered, which client address it saw, which rules fired;
  4. the same Service from outside the cluster, through the NodePort: now the source is masqueraded.

Everything it creates is removed when it ends, Ctrl-C included.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
from pathlib import Path

from kubeplane.daemon.app import Daemon, DaemonOptions
from kubeplane.netns.clients import resolve
from kubeplane.netns.names import pod_netns
from kubeplane.trace.cluster_trace import explain_in_cluster
from kubeplane.trace.live import trace_live
from kubeplane.trace.packet import Packet
from kubeplane.trace.render_live import render_live_text
from kubeplane.trace.render_text import render_text

HERE = Path(__file__).resolve().parent
NODE_A = "198.51.100.2"


def say(title: str, text: str, step: bool) -> None:
    print(f"\n{'=' * 100}\n{title}\n{'=' * 100}\n{text}", flush=True)
    if step:
        input("-- press Enter for the next step --")


async def tell_the_story(lab: str, step: bool) -> int:
    async with Daemon(DaemonOptions(paths=(HERE,), lab=lab)) as daemon:
        await daemon.wait_programmed(daemon.store.version, timeout=30)
        cluster = daemon.store.cluster
        client = next(p for p in cluster.pods if p.meta.key == "demo/client")
        web = next(s for s in cluster.services if s.meta.key == "demo/web")
        disagreements = 0

        name = "web.demo.svc.cluster.local"
        dns = await asyncio.to_thread(trace_live, lab, "demo/client", "10.96.0.10:53/udp", 2.0, name)
        disagreements += len(dns.disagreements)
        say(f"1. curl web: first the name. demo/client ({client.pod_ip}) asks the cluster DNS for {name}",
            render_live_text(dns), step)  # fmt: skip

        address = await asyncio.to_thread(resolve, pod_netns(lab, "demo", "client"), "web")
        packet = Packet(client.pod_ip or "", 40000, address, 80)
        explained = explain_in_cluster(cluster, client.node_name, packet)
        say(f"2. web is {address} (the ClusterIP of {web.meta.key}). What will node-a's rules do with the "
            "connection? (explain: no packet sent yet)", render_text(explained, "summary"), step)  # fmt: skip

        curl = await asyncio.to_thread(trace_live, lab, "demo/client", "web:80")
        disagreements += len(curl.disagreements)
        say("3. The real connection, traced by the kernel and compared with explain",
            render_live_text(curl), step)  # fmt: skip

        outside = await asyncio.to_thread(trace_live, lab, "external", f"{NODE_A}:30080")
        disagreements += len(outside.disagreements)
        say("4. The same Service from outside the cluster, through the NodePort on node-a",
            render_live_text(outside), step)  # fmt: skip
        return 1 if disagreements else 0


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--step", action="store_true", help="wait for Enter between steps")
    parser.add_argument("--lab", default="plife", help="lab name (1-8 of [a-z0-9])")
    args = parser.parse_args()
    if os.geteuid() != 0:
        print("packet_life: run as root (it builds network namespaces)", file=sys.stderr)
        return 2
    try:
        return asyncio.run(tell_the_story(args.lab, args.step))
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
