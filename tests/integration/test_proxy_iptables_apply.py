"""IptablesProxier against a real kernel: what full and partial syncs leave in a throwaway namespace.

These check the kernel's tables (read back with iptables-save), not packets; packet behaviour is in
test_proxy_iptables_traffic.py.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent.parent / "unit"))
from proxy_builders import make_cluster, make_endpoint, make_service, make_slice  # noqa: E402

from kubeplane.model.objects import Cluster, Service  # noqa: E402
from kubeplane.netns.nsfs import create_netns, remove_netns  # noqa: E402
from kubeplane.netns.run import run_in_netns  # noqa: E402
from kubeplane.proxy import plan as plan_module  # noqa: E402
from kubeplane.proxy.iptables.chains import endpoint_chain, service_chain  # noqa: E402
from kubeplane.proxy.iptables.partial import ORDER_FREE_CHAINS  # noqa: E402
from kubeplane.proxy.iptables.proxier import IptablesProxier  # noqa: E402
from kubeplane.proxy.iptables.tools import IptablesBackend  # noqa: E402

pytestmark = pytest.mark.root


@pytest.fixture
def netns() -> Iterator[str]:
    name = f"kpt-proxy-{os.getpid()}"
    create_netns([name])
    try:
        run_in_netns(name, ["ip", "link", "set", "lo", "up"])
        yield name
    finally:
        remove_netns(name)


def _cluster(endpoints: dict[str, tuple[str, ...]]) -> Cluster:
    services = tuple(make_service(name, f"10.96.0.{10 + i}") for i, name in enumerate(sorted(endpoints)))
    slices = tuple(
        make_slice(name, tuple(make_endpoint(ip, "node-a") for ip in ips)) for name, ips in endpoints.items()
    )
    return make_cluster(services, slices)


def _nat_chains(netns: str, backend: IptablesBackend) -> set[str]:
    saved = run_in_netns(netns, [f"iptables-{backend.value}-save", "-t", "nat"])
    return {line[1:].split()[0] for line in saved.splitlines() if line.startswith(":")}


@pytest.mark.parametrize("backend", list(IptablesBackend))
def test_full_then_partial_sync_rewrites_changed_chains_and_deletes_stale(
    netns: str, backend: IptablesBackend
) -> None:
    proxier = IptablesProxier(netns, "node-a", backend=backend)
    first = proxier.sync(_cluster({"a": ("10.244.1.1",), "b": ("10.244.1.2",)}))
    assert first.ok and first.full
    old_sep = endpoint_chain("ns1/b:p80", "tcp", "10.244.1.2:80")
    assert {service_chain("ns1/a:p80", "tcp"), old_sep} <= _nat_chains(netns, backend)

    second = proxier.sync(_cluster({"a": ("10.244.1.1",), "b": ("10.244.1.3",)}))
    chains = _nat_chains(netns, backend)
    assert second.ok and not second.full
    assert (second.changed_service_ports, second.deleted_chains) == (1, 1)
    assert old_sep not in chains
    assert endpoint_chain("ns1/b:p80", "tcp", "10.244.1.3:80") in chains
    assert service_chain("ns1/a:p80", "tcp") in chains

    saved = run_in_netns(netns, [f"iptables-{backend.value}-save"])
    assert (
        saved.count('-A PREROUTING -m comment --comment "kubernetes service portals" -j KUBE-SERVICES') == 1
    )


def test_missing_canary_forces_a_full_sync_that_restores_jumps(netns: str) -> None:
    proxier = IptablesProxier(netns, "node-a")
    cluster = _cluster({"a": ("10.244.1.1",)})
    assert proxier.sync(cluster).full
    run_in_netns(netns, ["iptables-nft", "-t", "mangle", "-X", "KUBE-PROXY-CANARY"])
    run_in_netns(netns, ["iptables-nft", "-t", "nat", "-F", "PREROUTING"])
    result = proxier.sync(cluster)
    assert result.ok and result.full
    saved = run_in_netns(netns, ["iptables-nft-save", "-t", "nat"])
    assert '-A PREROUTING -m comment --comment "kubernetes service portals" -j KUBE-SERVICES' in saved


def test_failed_restore_is_reported_and_next_sync_is_full(netns: str) -> None:
    proxier = IptablesProxier(netns, "node-a")
    cluster = _cluster({"a": ("10.244.1.1",)})
    assert proxier.sync(cluster).ok
    run_in_netns(
        netns, ["iptables-nft", "-t", "nat", "-I", "OUTPUT", "-j", service_chain("ns1/a:p80", "tcp")]
    )
    removed = proxier.sync(_cluster({"b": ("10.244.1.2",)}))  # deleting a referenced chain must fail
    assert not removed.ok and removed.error
    run_in_netns(
        netns, ["iptables-nft", "-t", "nat", "-D", "OUTPUT", "-j", service_chain("ns1/a:p80", "tcp")]
    )
    retried = proxier.sync(_cluster({"b": ("10.244.1.2",)}))
    assert retried.ok and retried.full
    assert service_chain("ns1/a:p80", "tcp") not in _nat_chains(netns, IptablesBackend.NFT)


def test_periodic_full_sync(netns: str) -> None:
    now = [0.0]
    proxier = IptablesProxier(netns, "node-a", full_sync_period=60.0, clock=lambda: now[0])
    cluster = _cluster({"a": ("10.244.1.1",)})
    assert proxier.sync(cluster).full
    now[0] = 30.0
    assert not proxier.sync(cluster).full
    now[0] = 91.0
    assert proxier.sync(cluster).full


def test_last_rules_shows_the_applied_ruleset(netns: str) -> None:
    proxier = IptablesProxier(netns, "node-a")
    assert proxier.last_rules() == ""
    proxier.sync(_cluster({"a": ("10.244.1.1",)}))
    assert '-A KUBE-SERVICES -m comment --comment "ns1/a:p80 cluster IP"' in proxier.last_rules()


def _tables(netns: str, backend: IptablesBackend) -> dict[str, dict[str, list[str]]]:
    """iptables-save as table -> chain -> rules in order (chain listing order and counters ignored). In
    the shared chains whose order does not matter (partial syncs insert there) rules are sorted, except
    KUBE-SERVICES' last rule, the NodePorts jump, which must stay last."""
    tables: dict[str, dict[str, list[str]]] = {}
    chains: dict[str, list[str]] = {}
    for line in run_in_netns(netns, [f"iptables-{backend.value}-save"]).splitlines():
        if line.startswith("*"):
            chains = tables.setdefault(line[1:], {})
        elif line.startswith(":"):
            chains.setdefault(line[1:].split()[0], [])
        elif line.startswith("-A "):
            chains.setdefault(line.split()[1], []).append(line)
    for table, chain in ORDER_FREE_CHAINS:
        rules = tables.get(table, {}).get(chain)
        if rules:
            last = rules[-1:] if (table, chain) == ("nat", "KUBE-SERVICES") else []
            tables[table][chain] = sorted(rules[: len(rules) - len(last)]) + last
    return tables


@pytest.mark.parametrize("backend", list(IptablesBackend))
def test_partial_syncs_leave_exactly_what_a_full_sync_writes(netns: str, backend: IptablesBackend) -> None:
    """Partial syncs skip unchanged shared chains and filter rules: the kernel must still end up equal to a
    fresh full sync after each kind of change."""
    steps = [
        {"a": ("10.244.1.1",), "b": ("10.244.1.2",)},
        {"a": ("10.244.1.1",), "b": ("10.244.1.3",)},  # endpoint swap: own chains only
        {"a": ("10.244.1.1",), "b": ("10.244.1.3",), "c": ("10.244.1.4",)},  # new service
        {"a": ("10.244.1.1",), "b": (), "c": ("10.244.1.4",)},  # no endpoints: filter REJECT
        {"a": ("10.244.1.1",), "b": ("10.244.1.5",), "c": ("10.244.1.4",)},
        {"a": ("10.244.1.1",), "b": ("10.244.1.5",)},  # service deleted: stale chains
        {"a": ("10.244.1.1",), "b": ("10.244.1.5",)},  # nothing changed
        {"a": (), "b": ("10.244.1.5",), "d": ("10.244.1.6",)},  # REJECT added, service added at once
        {"a": ("10.244.1.1",), "d": ("10.244.1.6",)},  # REJECT removed, service removed
    ]
    proxier = IptablesProxier(netns, "node-a", backend=backend)
    reference_netns = f"{netns}-ref"
    create_netns([reference_netns])
    try:
        for step, endpoints in enumerate(steps):
            result = proxier.sync(_cluster(endpoints))
            assert result.ok and result.full == (step == 0)
            fresh = IptablesProxier(reference_netns, "node-a", backend=backend)
            assert fresh.sync(_cluster(endpoints)).full
            assert _tables(netns, backend) == _tables(reference_netns, backend), f"after step {step}"
            remove_netns(reference_netns)
            create_netns([reference_netns])
    finally:
        remove_netns(reference_netns)


def test_canary_is_checked_at_most_once_per_canary_period(netns: str) -> None:
    now = [0.0]
    proxier = IptablesProxier(netns, "node-a", canary_period=10.0, clock=lambda: now[0])
    cluster = _cluster({"a": ("10.244.1.1",)})
    assert proxier.sync(cluster).full
    run_in_netns(netns, ["iptables-nft", "-t", "mangle", "-X", "KUBE-PROXY-CANARY"])
    now[0] = 5.0
    assert not proxier.sync(cluster).full
    now[0] = 11.0
    assert proxier.sync(cluster).full


@pytest.mark.parametrize("backend", list(IptablesBackend))
def test_first_sync_deletes_chains_an_earlier_run_left_and_restores_flushed_jumps(
    netns: str, backend: IptablesBackend
) -> None:
    earlier = IptablesProxier(netns, "node-a", backend=backend)
    assert earlier.sync(_cluster({"a": ("10.244.1.1",), "b": ("10.244.1.2",)})).ok
    run_in_netns(netns, [f"iptables-{backend.value}", "-t", "nat", "-F", "PREROUTING"])
    result = IptablesProxier(netns, "node-a", backend=backend).sync(_cluster({"a": ("10.244.1.1",)}))
    assert result.ok and result.full and result.deleted_chains == 2
    chains = _nat_chains(netns, backend)
    assert service_chain("ns1/b:p80", "tcp") not in chains
    assert endpoint_chain("ns1/b:p80", "tcp", "10.244.1.2:80") not in chains
    assert service_chain("ns1/a:p80", "tcp") in chains
    saved = run_in_netns(netns, [f"iptables-{backend.value}-save", "-t", "nat"])
    assert (
        saved.count('-A PREROUTING -m comment --comment "kubernetes service portals" -j KUBE-SERVICES') == 1
    )


def test_a_planning_error_while_the_restore_runs_applies_nothing(
    netns: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    proxier = IptablesProxier(netns, "node-a")
    assert proxier.sync(_cluster({"a": ("10.244.1.1",)})).ok
    before = run_in_netns(netns, ["iptables-nft-save", "-t", "nat"])

    def failing(svc: Service, *args: object) -> object:
        raise RuntimeError(f"cannot plan {svc.meta.name}")

    monkeypatch.setattr(plan_module, "_planned", failing)
    proxier.request_full_sync()
    with pytest.raises(RuntimeError, match="cannot plan b"):
        proxier.sync(_cluster({"b": ("10.244.1.2",)}))
    after = run_in_netns(netns, ["iptables-nft-save", "-t", "nat"])
    assert _without_comments(after) == _without_comments(before)


def _without_comments(saved: str) -> list[str]:
    return [line for line in saved.splitlines() if not line.startswith("#")]
