"""The daemon's defaults: runner periods from KubeProxyConfiguration, and the kube-dns objects it adds."""

from __future__ import annotations

from pathlib import Path

from kubeplane.daemon.app import DEFAULT_MIN_SYNC_PERIOD, DaemonOptions, runner_periods
from kubeplane.daemon.cluster_dns import dns_service_ip, with_cluster_dns
from kubeplane.model.complete import build_cluster
from kubeplane.model.objects import (
    Cluster,
    KubeplaneConfiguration,
    KubeProxyConfiguration,
    ObjectMeta,
    Service,
    ServiceCIDR,
    SyncPeriods,
)

OPTIONS = DaemonOptions(paths=(Path("."),))


def test_default_configuration_gets_a_fast_min_sync_period() -> None:
    periods = runner_periods(Cluster(), OPTIONS)
    assert periods.min_sync_period == DEFAULT_MIN_SYNC_PERIOD
    assert periods.sync_period == 30.0


def test_configured_min_sync_period_is_honoured_per_mode() -> None:
    config = KubeProxyConfiguration(iptables=SyncPeriods(sync_period=20.0, min_sync_period=0.5))
    assert runner_periods(Cluster(proxy_config=config), OPTIONS).min_sync_period == 0.5
    ipvs_options = DaemonOptions(paths=(Path("."),), mode="ipvs")
    assert (
        runner_periods(Cluster(proxy_config=config), ipvs_options).min_sync_period == DEFAULT_MIN_SYNC_PERIOD
    )


def test_command_line_period_beats_configuration() -> None:
    config = KubeProxyConfiguration(iptables=SyncPeriods(min_sync_period=0.5))
    options = DaemonOptions(paths=(Path("."),), min_sync_period=0.002)
    assert runner_periods(Cluster(proxy_config=config), options).min_sync_period == 0.002


def test_kube_dns_service_and_pod_are_added_and_complete() -> None:
    cluster = build_cluster(with_cluster_dns([]))
    (service,) = cluster.services
    assert service.meta.key == "kube-system/kube-dns"
    assert service.cluster_ips == ("10.96.0.10",)
    assert {(p.name, p.port, p.protocol) for p in service.ports} == {
        ("dns", 53, "UDP"),
        ("dns-tcp", 53, "TCP"),
    }
    (pod,) = cluster.pods
    assert pod.meta.key == "kube-system/coredns" and pod.pod_ip and pod.ready is True


def test_manifest_kube_dns_wins_and_configured_ip_is_used() -> None:
    own = Service(ObjectMeta("kube-dns", "kube-system"), cluster_ips=("10.96.0.53",))
    objects = with_cluster_dns([own])
    assert [o for o in objects if isinstance(o, Service)] == [own]
    configured = KubeplaneConfiguration(dns_service_ip="10.100.0.2")
    assert dns_service_ip([configured]) == "10.100.0.2"
    assert dns_service_ip([ServiceCIDR(ObjectMeta("c"), ("10.200.0.0/16",))]) == "10.200.0.10"


def test_explicit_one_second_min_sync_period_is_not_mistaken_for_unset() -> None:
    config = KubeProxyConfiguration(iptables=SyncPeriods(min_sync_period=1.0))
    assert runner_periods(Cluster(proxy_config=config), OPTIONS).min_sync_period == 1.0
