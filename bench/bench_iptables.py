"""Benchmark: iptables full and partial sync of N services x 10 endpoints, ours against bare iptables-restore.

Each run of each size is its own subprocess (so "peak RSS" is that run's own peak and every first sync
starts with cold chain-name caches) against throwaway namespaces `kpb-<pid>-ours` / `-bare`, removed
afterwards. The cluster is bench/synthetic.py's, 4 nodes with endpoints on all of them, proxied on node-0.
For each run it measures, in the same process:

- ours: IptablesProxier.sync end to end (plan + render + iptables-save + streamed iptables-restore +
  canary + conntrack check), the first sync into an empty namespace; `py cpu s` is the CPU time our
  process spent in it (iptables-restore excluded), i.e. the Python work whatever the machine's load;
  `plan s` and `render s` time the pure parts alone (render: producing the streamed restore input once,
  cold caches, for reference);
- bare: `iptables-restore -w --noflush < file` (via nsenter, as ours) of exactly the text our sync wrote,
  read from a file, into a second empty namespace;
- partial (one endpoint of one service moved): our sync against a bare restore of the same partial text.

Ours and bare alternate which goes first from one repeat to the next. Overhead = ours / bare - 1; with
`--repeat` > 1 the summary gives each size's median.

Run as root: `.venv/bin/python bench/bench_iptables.py [--sizes 1000 5000 10000] [--backend nft|legacy]
[--repeat 3]`.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import AsyncIterator
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from synthetic import SyntheticLayout, node_name, synthetic_cluster, with_one_endpoint_moved  # noqa: E402

from kubeplane.netns.nsfs import create_netns, remove_netns  # noqa: E402
from kubeplane.netns.run import netns_argv  # noqa: E402
from kubeplane.proxy.iptables import chains  # noqa: E402
from kubeplane.proxy.iptables.proxier import CANARY_TEXT, IptablesProxier  # noqa: E402
from kubeplane.proxy.iptables.render import jump_rules  # noqa: E402
from kubeplane.proxy.iptables.stream import FullRestoreStream  # noqa: E402
from kubeplane.proxy.iptables.tools import IptablesBackend, IptablesTools  # noqa: E402
from kubeplane.proxy.plan import plan_node  # noqa: E402

NODES = 4
PROXIED_NODE = node_name(0)


class RecordingTools:
    """Keeps what the proxier writes to iptables-restore, so the bare run loads exactly the same text.
    Appending each chunk to a list is all it adds to our timing."""

    written: list[str] = []

    @classmethod
    def install(cls) -> None:
        stream_restore = IptablesTools.restore_stream_async
        restore = IptablesTools.restore_async

        async def recording_stream(self: IptablesTools, chunks: AsyncIterator[str]) -> None:
            kept: list[str] = []
            cls.written.append("")

            async def tee() -> AsyncIterator[str]:
                async for chunk in chunks:
                    kept.append(chunk)
                    yield chunk

            await stream_restore(self, tee())
            cls.written[-1] = "".join(kept)

        async def recording_restore(self: IptablesTools, text: str) -> None:
            cls.written.append(text)
            await restore(self, text)

        IptablesTools.restore_stream_async = recording_stream  # type: ignore[method-assign]
        IptablesTools.restore_async = recording_restore  # type: ignore[method-assign]


def bare_restore_seconds(netns: str, backend: IptablesBackend, text: str) -> float:
    """`iptables-restore -w --noflush < file` in `netns`, timed from spawn to exit."""
    argv = netns_argv(netns, IptablesTools(netns, backend=backend).restore_argv())
    with tempfile.TemporaryFile("w+") as rules:
        rules.write(text)
        rules.flush()
        rules.seek(0)
        started = time.perf_counter()
        subprocess.run(argv, stdin=rules, check=True, capture_output=True)
        return time.perf_counter() - started


def cold_stream_text(services: int) -> tuple[str, float, float]:
    """The full sync's restore input as our first sync into an empty namespace writes it, with the pure
    plan and render times (chain-name caches cleared before and after, so ours starts cold too)."""
    cluster = synthetic_cluster(SyntheticLayout(services, nodes=NODES))
    chains.port_proto_hash.cache_clear()
    chains.endpoint_chains.cache_clear()
    started = time.perf_counter()
    plan = plan_node(cluster, PROXIED_NODE)
    plan_s = time.perf_counter() - started
    started = time.perf_counter()
    text = "".join(FullRestoreStream(plan, "IPv4").chunks(frozenset(), jump_rules("IPv4"))) + CANARY_TEXT
    render_s = time.perf_counter() - started
    chains.port_proto_hash.cache_clear()
    chains.endpoint_chains.cache_clear()
    return text, plan_s, render_s


def measure(services: int, backend: IptablesBackend, bare_first: bool) -> dict[str, float]:
    """One run of one size, in this process; returns seconds and peak RSS (MiB)."""
    RecordingTools.install()
    full_text, plan_s, render_s = cold_stream_text(services)
    cluster = synthetic_cluster(SyntheticLayout(services, nodes=NODES))
    changed_cluster = with_one_endpoint_moved(cluster)
    ours_ns, bare_ns = f"kpb-{os.getpid()}-ours", f"kpb-{os.getpid()}-bare"
    create_netns([ours_ns, bare_ns])
    try:
        if bare_first:
            bare_full_s = bare_restore_seconds(bare_ns, backend, full_text)
        proxier = IptablesProxier(ours_ns, PROXIED_NODE, backend=backend)
        cpu_before = _own_cpu_seconds()
        full = proxier.sync(cluster)
        python_cpu_s = _own_cpu_seconds() - cpu_before
        assert full.ok and full.full, full.error
        if not bare_first:
            bare_full_s = bare_restore_seconds(bare_ns, backend, full_text)
        assert RecordingTools.written == [full_text], "our sync wrote other rules than the bare run loads"

        partial = proxier.sync(changed_cluster)
        assert partial.ok and not partial.full, partial.error
        assert len(RecordingTools.written) == 2, "the partial sync wrote nothing"
        bare_partial_s = bare_restore_seconds(bare_ns, backend, RecordingTools.written[-1])
    finally:
        remove_netns(ours_ns)
        remove_netns(bare_ns)
    return {
        "services": services,
        "plan_s": plan_s,
        "render_s": render_s,
        "ours_full_s": full.seconds,
        "python_cpu_s": python_cpu_s,
        "bare_full_s": bare_full_s,
        "ours_partial_s": partial.seconds,
        "bare_partial_s": bare_partial_s,
        "lines": full_text.count("\n"),
        "peak_rss_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
    }


def _own_cpu_seconds() -> float:
    """CPU time of this process alone (not iptables-restore): the Python work a full sync adds."""
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def overhead(row: dict[str, float]) -> float:
    return (row["ours_full_s"] / row["bare_full_s"] - 1) * 100


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[1000, 5000, 10000])
    parser.add_argument("--backend", choices=[b.value for b in IptablesBackend], default="nft")
    parser.add_argument("--repeat", type=int, default=1)
    parser.add_argument("--one", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--bare-first", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    backend = IptablesBackend(args.backend)
    if args.one is not None:
        print(json.dumps(measure(args.one, backend, args.bare_first)))
        return
    load = os.getloadavg()[0]
    print(f"iptables backend: {backend.value}; 10 endpoints per service; load average {load:.1f}")
    print(
        f"{'services':>8} {'lines':>8} {'plan s':>7} {'render s':>8} {'ours full s':>11} {'py cpu s':>8} "
        f"{'bare full s':>11} {'overhead':>8} {'ours part s':>11} {'bare part s':>11} {'peak MiB':>8}",
        flush=True,
    )
    by_size: dict[int, list[float]] = {}
    for size in args.sizes:
        for run in range(args.repeat):
            argv = [sys.executable, __file__, "--one", str(size), "--backend", backend.value]
            argv += ["--bare-first"] if run % 2 else []
            out = subprocess.run(argv, check=True, capture_output=True, text=True).stdout
            r = json.loads(out)
            by_size.setdefault(size, []).append(overhead(r))
            print(
                f"{r['services']:>8} {r['lines']:>8} {r['plan_s']:>7.3f} {r['render_s']:>8.3f} "
                f"{r['ours_full_s']:>11.3f} {r['python_cpu_s']:>8.3f} {r['bare_full_s']:>11.3f} "
                f"{overhead(r):>7.0f}% "
                f"{r['ours_partial_s']:>11.3f} {r['bare_partial_s']:>11.3f} {r['peak_rss_mib']:>8.0f}",
                flush=True,
            )
    if args.repeat > 1:
        medians = ", ".join(f"{size}: {statistics.median(v):.0f}%" for size, v in by_size.items())
        print(f"median overhead over {args.repeat} runs: {medians}; load average {os.getloadavg()[0]:.1f}")


if __name__ == "__main__":
    main()
