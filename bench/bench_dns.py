"""Cluster DNS throughput and latency: kubeplane's DnsServer against unbound, same names, same query mix.

Run: `.venv/bin/python bench/bench_dns.py [--seconds 10] [--rounds 2]` (needs Debian's `dnsperf`, `unbound`).

unbound (one thread) and kubeplane's server (one process: UDP answered by its fast-path thread) run on
loopback at once, each in its own process, and dnsperf drives one at a time with the same query file for
the same time, in interleaved rounds; the table shows medians, and the load average the machine had. The
query mix is what pods send: A and AAAA lookups of services, the NXDOMAIN expansions glibc's search path
(ndots:5) produces before the right name, SRV lookups of named ports and PTR lookups of service and pod IPs.
unbound serves the same records as `local-data` in static local zones. QPS comes from saturation runs (100
queries outstanding); latency percentiles from dnsperf's own per-query latencies (`-v`) in runs limited to
half of unbound's QPS, so that latency is measured under load rather than at saturation, where it only
measures the queue length.
"""

from __future__ import annotations

import argparse
import asyncio
import ipaddress
import os
import random
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from kubeplane.dns.records import Address, Record, Soa, Srv, Target, Text  # noqa: E402
from kubeplane.dns.zone import Zone, build_zone  # noqa: E402
from kubeplane.model.objects import (  # noqa: E402
    SERVICE_NAME_LABEL,
    Cluster,
    Endpoint,
    EndpointPort,
    EndpointSlice,
    ObjectMeta,
    Service,
    ServicePort,
)
from kubeplane.testing import free_port  # noqa: E402

NAMESPACES = 5
SERVICES_PER_NAMESPACE = 20
ENDPOINTS_PER_SERVICE = 3
QUERY_LINES = 5000
OUTSTANDING = 100


@dataclass(frozen=True)
class PerfResult:
    qps: float
    lost_percent: float
    p50_ms: float | None = None
    p99_ms: float | None = None


def synthetic_cluster() -> Cluster:
    """NAMESPACES x SERVICES_PER_NAMESPACE services with endpoints; the first of each namespace headless."""
    services: list[Service] = []
    slices: list[EndpointSlice] = []
    pod_ips = (str(ipaddress.ip_address("10.244.0.0") + i) for i in range(1, 60000))
    for n in range(NAMESPACES):
        namespace = f"ns{n}"
        for s in range(SERVICES_PER_NAMESPACE):
            index = n * SERVICES_PER_NAMESPACE + s
            headless = s == 0
            services.append(
                Service(
                    ObjectMeta(f"web-{s}", namespace),
                    cluster_ips=() if headless else (str(ipaddress.ip_address("10.96.1.0") + index),),
                    headless=headless,
                    ports=(ServicePort(80, name="http", target_port=8080),),
                )
            )
            endpoints = tuple(Endpoint((next(pod_ips),)) for _ in range(ENDPOINTS_PER_SERVICE))
            meta = ObjectMeta(f"web-{s}-x", namespace, labels={SERVICE_NAME_LABEL: f"web-{s}"})
            slices.append(EndpointSlice(meta, endpoints=endpoints, ports=(EndpointPort(8080, name="http"),)))
    return Cluster(services=tuple(services), endpoint_slices=tuple(slices))


def query_mix(zone: Zone, seed: int = 7) -> list[str]:
    """dnsperf input lines: 30% A hits, 10% AAAA (NODATA), 35% search-path NXDOMAIN, 10% SRV, 15% PTR."""
    rng = random.Random(seed)
    services = [(s, f"ns{n}") for n in range(NAMESPACES) for s in range(SERVICES_PER_NAMESPACE)]
    reverse = sorted(name for name in zone.records if name.endswith(".in-addr.arpa."))
    search = ["{ns}.svc.cluster.local", "svc.cluster.local", "cluster.local"]
    lines: list[str] = []
    for _ in range(QUERY_LINES):
        s, ns = rng.choice(services)
        roll = rng.random()
        if roll < 0.30:
            lines.append(f"web-{s}.{ns}.svc.cluster.local A")
        elif roll < 0.40:
            lines.append(f"web-{s}.{ns}.svc.cluster.local AAAA")
        elif roll < 0.75:
            short = rng.choice([f"web-{s}.{ns}", f"www.example{rng.randrange(50)}.com", f"api{s}"])
            suffix = rng.choice(search).format(ns=rng.choice(["ns0", "ns1", "default"]))
            lines.append(f"{short}.{suffix} {rng.choice(['A', 'AAAA'])}")
        elif roll < 0.85:
            lines.append(f"_http._tcp.web-{s}.{ns}.svc.cluster.local SRV")
        else:
            lines.append(f"{rng.choice(reverse)} PTR")
    return lines


def zone_file_lines(zone: Zone) -> list[str]:
    """Every record of the zone in presentation format, for unbound's local-data."""
    lines = []
    for name, records in zone.records.items():
        for record in records:
            lines.append(f"{name} {record.ttl} IN {record.rtype.name} {_rdata_text(record)}")
    return lines


def _rdata_text(record: Record) -> str:
    data = record.data
    if isinstance(data, Address):
        return data.ip
    if isinstance(data, Target):
        return data.name
    if isinstance(data, Srv):
        return f"{data.priority} {data.weight} {data.port} {data.target}"
    if isinstance(data, Text):
        return f'"{data.text}"'
    assert isinstance(data, Soa)
    return f"{data.mname} {data.rname} {data.serial} {data.refresh} {data.retry} {data.expire} {data.minimum}"


def unbound_config(zone: Zone, port: int, workdir: Path) -> Path:
    reverse_zones = sorted({".".join(name.split(".")[-5:]) for name in zone.records if "in-addr" in name})
    local = [f'local-zone: "{zone.origin}" static'] + [f'local-zone: "{z}" static' for z in reverse_zones]
    local += [f"local-data: '{line}'" for line in zone_file_lines(zone)]
    text = "\n".join(
        [
            "server:",
            "  num-threads: 1",
            f"  interface: 127.0.0.1@{port}",
            "  do-ip6: no",
            "  access-control: 127.0.0.0/8 allow",
            '  chroot: ""',
            '  username: ""',
            f'  directory: "{workdir}"',
            f'  pidfile: "{workdir}/unbound.pid"',
            f'  logfile: "{workdir}/unbound.log"',
            "  use-syslog: no",
            "  verbosity: 0",
            "  do-daemonize: no",
            *(f"  {line}" for line in local),
        ]
    )
    path = workdir / "unbound.conf"
    path.write_text(text + "\n")
    return path


def run_dnsperf(port: int, queries: Path, seconds: float, rate: float | None = None) -> PerfResult:
    argv = ["dnsperf", "-s", "127.0.0.1", "-p", str(port), "-d", str(queries), "-l", str(seconds)]
    argv += ["-q", str(OUTSTANDING), "-t", "2"]
    if rate is not None:
        argv += ["-Q", str(int(rate)), "-v"]
    process = subprocess.run(argv, capture_output=True, text=True, check=True, timeout=seconds + 60)
    out = process.stdout
    qps = float(_field(out, r"Queries per second:\s+([\d.]+)"))
    lost = float(_field(out, r"Queries lost:\s+\d+ \(([\d.]+)%\)"))
    if rate is None:
        return PerfResult(qps, lost)
    latencies = sorted(float(m) for m in re.findall(r"^> \S+ .* ([\d.]+)$", out, flags=re.M))
    if not latencies:
        return PerfResult(qps, lost)
    return PerfResult(
        qps,
        lost,
        latencies[len(latencies) // 2] * 1000,
        latencies[min(len(latencies) - 1, int(len(latencies) * 0.99))] * 1000,
    )


def _field(text: str, pattern: str) -> str:
    match = re.search(pattern, text)
    if match is None:
        raise RuntimeError(f"dnsperf output lacks {pattern!r}:\n{text}")
    return match.group(1)


def wait_until_answering(port: int, process: subprocess.Popen[bytes], timeout: float = 15.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"server exited early with {process.returncode}")
        probe = subprocess.run(
            [
                "dig",
                "+short",
                "+tries=1",
                "+time=1",
                "-p",
                str(port),
                "@127.0.0.1",
                "dns-version.cluster.local",
                "TXT",
            ],
            capture_output=True,
            text=True,
        )
        if "1.1.0" in probe.stdout:
            return
        time.sleep(0.2)
    raise RuntimeError(f"server on port {port} did not answer within {timeout}s")


@dataclass(frozen=True)
class ServerUnderTest:
    name: str
    argv: tuple[str, ...]
    port: int


@contextmanager
def running(servers: list[ServerUnderTest], log_dir: Path) -> Iterator[None]:
    """Start every server process, wait until each answers, and kill them all by pid at the end."""
    processes: list[subprocess.Popen[bytes]] = []
    try:
        for server in servers:
            log = log_dir / f"{server.name.replace(' ', '-')}.log"
            with log.open("wb") as stderr:
                process = subprocess.Popen(server.argv, stdout=subprocess.DEVNULL, stderr=stderr)
            processes.append(process)
            try:
                wait_until_answering(server.port, process)
            except RuntimeError as error:
                raise RuntimeError(f"{server.name}: {error}\n{log.read_text()}") from error
        yield
    finally:
        for process in processes:
            process.terminate()
            try:
                process.wait(timeout=5)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()


def measure_interleaved(
    servers: list[ServerUnderTest], queries: Path, seconds: float, rounds: int
) -> tuple[dict[str, PerfResult], float]:
    """Median QPS per server over `rounds` interleaved saturation runs, then median latency at half of
    the first server's QPS. Interleaving spreads any load from elsewhere on the machine over all servers
    instead of letting it land on whichever ran at the wrong moment."""
    for server in servers:
        run_dnsperf(server.port, queries, 1.0)  # warm caches and remembered negative answers
    throughput: dict[str, list[PerfResult]] = {server.name: [] for server in servers}
    for _ in range(rounds):
        for server in servers:
            throughput[server.name].append(run_dnsperf(server.port, queries, seconds))
    rate = statistics.median(r.qps for r in throughput[servers[0].name]) / 2
    latency: dict[str, list[PerfResult]] = {server.name: [] for server in servers}
    for _ in range(rounds):
        for server in servers:
            latency[server.name].append(run_dnsperf(server.port, queries, seconds, rate=rate))
    results = {}
    for server in servers:
        runs, timed = throughput[server.name], latency[server.name]
        results[server.name] = PerfResult(
            statistics.median(r.qps for r in runs),
            max(r.lost_percent for r in runs),
            statistics.median(r.p50_ms for r in timed if r.p50_ms is not None),
            statistics.median(r.p99_ms for r in timed if r.p99_ms is not None),
        )
    return results, rate


def serve_synthetic(port: int) -> None:
    """Child-process mode: serve the synthetic cluster on 127.0.0.1:`port` until terminated."""
    from kubeplane.dns.server import DnsServer

    async def main() -> None:
        server = DnsServer(synthetic_cluster())
        await server.start("127.0.0.1", port)
        await asyncio.Event().wait()

    asyncio.run(main())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=10.0, help="length of each dnsperf run")
    parser.add_argument("--rounds", type=int, default=2, help="interleaved runs per server")
    parser.add_argument("--serve", type=int, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.serve is not None:
        serve_synthetic(args.serve)
        return
    for tool in ("dnsperf", "unbound", "dig"):
        if shutil.which(tool) is None:
            sys.exit(f"bench_dns: {tool} not found (apt-get install -y dnsperf unbound dnsutils)")
    zone = build_zone(synthetic_cluster())
    with tempfile.TemporaryDirectory(prefix="kubeplane-bench-dns-") as tmp:
        workdir = Path(tmp)
        queries = workdir / "queries.txt"
        queries.write_text("\n".join(query_mix(zone)) + "\n")
        port = free_port()
        config = unbound_config(zone, port, workdir)
        check = subprocess.run(["unbound-checkconf", str(config)], capture_output=True, text=True)
        if check.returncode != 0:
            sys.exit(f"bench_dns: unbound config rejected: {check.stdout}{check.stderr}")
        ours = free_port()
        servers = [
            ServerUnderTest("unbound 1 thread", ("unbound", "-d", "-c", str(config)), port),
            ServerUnderTest("kubeplane", (sys.executable, __file__, "--serve", str(ours)), ours),
        ]
        load_before = os.getloadavg()[0]
        with running(servers, workdir):
            results, rate = measure_interleaved(servers, queries, args.seconds, args.rounds)
        load_after = os.getloadavg()[0]
    print(
        f"\nquery mix: {QUERY_LINES} lines, {len(zone.records)} names; {args.seconds:.0f} s per run; "
        f"medians of {args.rounds} interleaved rounds; latency at {rate:.0f} QPS (half of unbound's max); "
        f"1-min load average {load_before:.1f} before, {load_after:.1f} after on {os.cpu_count()} CPUs"
    )
    print(f"{'server':<20} {'QPS':>9} {'vs unbound':>10} {'lost %':>7} {'p50 ms':>7} {'p99 ms':>7}")
    unbound = results[servers[0].name]
    for name, result in results.items():
        p50 = f"{result.p50_ms:.3f}" if result.p50_ms is not None else "-"
        p99 = f"{result.p99_ms:.3f}" if result.p99_ms is not None else "-"
        ratio = result.qps / unbound.qps * 100
        print(f"{name:<20} {result.qps:>9.0f} {ratio:>9.0f}% {result.lost_percent:>7.2f} {p50:>7} {p99:>7}")


if __name__ == "__main__":
    main()
