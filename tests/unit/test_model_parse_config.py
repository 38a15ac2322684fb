"""Parsing KubeProxyConfiguration and KubeplaneConfiguration, including Go durations."""

from __future__ import annotations

import pytest
from model_helpers import FILE, parse, parse_one, single_error

from kubeplane.model.formats import format_duration, parse_duration
from kubeplane.model.objects import (
    ConntrackConfig,
    KubeplaneConfiguration,
    KubeProxyConfiguration,
    SyncPeriods,
)
from kubeplane.model.parse import parse_object
from kubeplane.model.serialize import to_manifest


def test_every_kube_proxy_field_is_parsed() -> None:
    parsed = parse("""
        apiVersion: kubeproxy.config.k8s.io/v1alpha1
        kind: KubeProxyConfiguration
        bindAddress: 0.0.0.0
        mode: ipvs
        clusterCIDR: 10.244.0.0/16,fd00:244::/56
        detectLocalMode: NodeCIDR
        nodePortAddresses: [198.51.100.0/24, primary]
        iptables: {masqueradeAll: true, masqueradeBit: 12, syncPeriod: 10s, minSyncPeriod: 500ms}
        ipvs: {scheduler: wrr, strictARP: true, syncPeriod: 1m30s, minSyncPeriod: 0s, tcpTimeout: 0s}
        nftables: {syncPeriod: 5s, minSyncPeriod: 1s}
        conntrack:
          maxPerCore: 0
          min: 1000
          tcpEstablishedTimeout: 24h0m0s
          tcpCloseWaitTimeout: 1h
          udpTimeout: 30s
          udpStreamTimeout: 2m
    """)
    assert parsed.warnings == ()
    (config,) = parsed.objects
    assert isinstance(config, KubeProxyConfiguration)
    assert config.meta.name == "kube-proxy"
    assert config.mode == "ipvs"
    assert config.cluster_cidr == "10.244.0.0/16,fd00:244::/56"
    assert config.detect_local_mode == "NodeCIDR"
    assert config.node_port_addresses == ("198.51.100.0/24", "primary")
    assert (config.masquerade_all, config.masquerade_bit) == (True, 12)
    assert config.iptables == SyncPeriods(10.0, 0.5)
    assert config.ipvs == SyncPeriods(90.0, 0.0)
    assert config.nftables == SyncPeriods(5.0, 1.0)
    assert (config.ipvs_scheduler, config.ipvs_strict_arp) == ("wrr", True)
    assert config.conntrack == ConntrackConfig(0, 1000, 86400.0, 3600.0, 30.0, 120.0)


@pytest.mark.parametrize(
    ("mode", "bridge", "prefix"),
    [("BridgeInterface", "cbr0", ""), ("InterfaceNamePrefix", "", "veth"), ("ClusterCIDR", "cbr0", "veth")],
)
def test_detect_local_interfaces_are_parsed_for_every_mode(mode: str, bridge: str, prefix: str) -> None:
    detect = ", ".join(
        f"{name}: {value}"
        for name, value in (("bridgeInterface", bridge), ("interfaceNamePrefix", prefix))
        if value
    )
    config = parse_one(_proxy(f"detectLocalMode: {mode}\ndetectLocal: {{{detect}}}"))
    assert (
        config.detect_local_mode,
        config.detect_local_bridge_interface,
        config.detect_local_interface_name_prefix,
    ) == (mode, bridge, prefix)


def test_unknown_detect_local_field_is_warned_about() -> None:
    parsed = parse(_proxy("detectLocal: {bridgeInterface: cbr0, interfaceName: eth0}"))
    assert [w for w in parsed.warnings if "detectLocal.interfaceName" in w and "unknown field" in w]


def test_empty_kube_proxy_configuration_has_kube_proxy_defaults() -> None:
    config = parse_one(
        "apiVersion: kubeproxy.config.k8s.io/v1alpha1\nkind: KubeProxyConfiguration\nmode: ''\n"
    )
    assert config == KubeProxyConfiguration(meta=config.meta)


def _proxy(body: str) -> str:
    return f"apiVersion: kubeproxy.config.k8s.io/v1alpha1\nkind: KubeProxyConfiguration\n{body}\n"


@pytest.mark.parametrize(
    ("body", "field", "message"),
    [
        ("mode: kernelspace", "mode", "must be one of iptables, ipvs, nftables"),
        ("iptables: {syncPeriod: soon}", "iptables.syncPeriod", "must be a duration like '30s'"),
        ("iptables: {syncPeriod: 0s}", "iptables.syncPeriod", "must be greater than 0"),
        (
            "iptables: {syncPeriod: 1s, minSyncPeriod: 2s}",
            "iptables.minSyncPeriod",
            "not be greater than syncPeriod",
        ),
        ("iptables: {masqueradeBit: 32}", "iptables.masqueradeBit", "must be between 0 and 31"),
        ("clusterCIDR: 10.244.0.0/16,10.245.0.0/16", "clusterCIDR", "one CIDR per IP family"),
        ("ipvs: {scheduler: random}", "ipvs.scheduler", "must be one of rr, wrr"),
        ("nodePortAddresses: [eth0]", "nodePortAddresses[0]", "must be a valid CIDR"),
        ("conntrack: {min: -1}", "conntrack.min", "must be 0 or more"),
        (
            "detectLocalMode: BridgeInterface",
            "detectLocal.bridgeInterface",
            "must be set when detectLocalMode is BridgeInterface",
        ),
        (
            "detectLocalMode: InterfaceNamePrefix\ndetectLocal: {bridgeInterface: cbr0}",
            "detectLocal.interfaceNamePrefix",
            "must be set when detectLocalMode is InterfaceNamePrefix",
        ),
        (
            "detectLocal: {interfaceNamePrefix: fifteen-chars-x}",
            "detectLocal.interfaceNamePrefix",
            "at most 14",
        ),
        (
            "detectLocal: {bridgeInterface: 'br 0'}",
            "detectLocal.bridgeInterface",
            "must be an interface name",
        ),
        ("detectLocal: {bridgeInterface: 7}", "detectLocal.bridgeInterface", "must be a string"),
    ],
)
def test_invalid_kube_proxy_field_names_file_object_and_field(body: str, field: str, message: str) -> None:
    line = single_error(_proxy(body))
    assert line.startswith(f"{FILE}#0 KubeProxyConfiguration kube-proxy: {field}: "), line
    assert message in line


def test_every_kubeplane_configuration_field_is_parsed() -> None:
    config = parse_one("""
        apiVersion: kubeplane.dev/v1alpha1
        kind: KubeplaneConfiguration
        metadata: {name: lab}
        clusterDomain: example.internal.
        dnsServiceIP: 10.96.0.53
        upstreamResolvers: [192.0.2.53, "192.0.2.54:5353", "[2001:db8::53]:53"]
        dnsTTL: 30
        dnsPodsMode: verified
    """)
    assert config == KubeplaneConfiguration(
        meta=config.meta,
        cluster_domain="example.internal",
        dns_service_ip="10.96.0.53",
        upstream_resolvers=("192.0.2.53", "192.0.2.54:5353", "[2001:db8::53]:53"),
        dns_ttl=30,
        dns_pods_mode="verified",
    )


@pytest.mark.parametrize(
    ("body", "field", "message"),
    [
        ("upstreamResolvers: [dns.google]", "upstreamResolvers[0]", "must be 'ip', 'ip:port'"),
        (
            "upstreamResolvers: ['192.0.2.1:99999']",
            "upstreamResolvers[0]",
            "port must be between 1 and 65535",
        ),
        ("dnsTTL: -1", "dnsTTL", "must be between 0 and 3600"),
        ("dnsPodsMode: sometimes", "dnsPodsMode", "must be one of insecure, verified, disabled"),
        ("dnsServiceIP: ten", "dnsServiceIP", "must be a valid IP address"),
        ("clusterDomain: under_score.local", "clusterDomain", "RFC 1123 subdomain"),
    ],
)
def test_invalid_kubeplane_field_names_file_object_and_field(body: str, field: str, message: str) -> None:
    line = single_error(f"apiVersion: kubeplane.dev/v1alpha1\nkind: KubeplaneConfiguration\n{body}\n")
    assert line.startswith(f"{FILE}#0 KubeplaneConfiguration kubeplane: {field}: "), line
    assert message in line


@pytest.mark.parametrize(
    ("text", "seconds"),
    [
        ("1s", 1.0),
        ("500ms", 0.5),
        ("30s", 30.0),
        ("1m30s", 90.0),
        ("2h0m0s", 7200.0),
        ("0", 0.0),
        ("1.5s", 1.5),
    ],
)
def test_go_durations_are_read_as_seconds(text: str, seconds: float) -> None:
    assert parse_duration(text) == seconds


@pytest.mark.parametrize("seconds", [0.0, 0.25, 1.0, 30.0, 90.0, 3600.0, 86400.0, 1.5])
def test_formatted_durations_read_back_to_the_same_seconds(seconds: float) -> None:
    assert parse_duration(format_duration(seconds)) == seconds


@pytest.mark.parametrize("text", ["", "s", "10", "1x", "-1s", "1s2"])
def test_malformed_durations_are_refused(text: str) -> None:
    assert isinstance(parse_duration(text), str)


def test_detect_local_interfaces_survive_serialization() -> None:
    config = KubeProxyConfiguration(
        detect_local_mode="InterfaceNamePrefix",
        detect_local_bridge_interface="cbr0",
        detect_local_interface_name_prefix="veth",
    )
    assert parse_object(to_manifest(config)) == config


def test_unset_min_sync_period_is_told_apart_from_an_explicit_one_second() -> None:
    config = parse_one("""
        apiVersion: kubeproxy.config.k8s.io/v1alpha1
        kind: KubeProxyConfiguration
        iptables: {minSyncPeriod: 1s}
    """)
    assert isinstance(config, KubeProxyConfiguration)
    assert config.iptables.min_sync_period == 1.0
    assert config.ipvs.min_sync_period is None
    assert config.nftables == SyncPeriods(30.0, None)


def test_top_level_min_sync_period_is_the_default_of_every_mode() -> None:
    config = parse_one("""
        apiVersion: kubeproxy.config.k8s.io/v1alpha1
        kind: KubeProxyConfiguration
        minSyncPeriod: 2s
        ipvs: {minSyncPeriod: 100ms}
    """)
    assert isinstance(config, KubeProxyConfiguration)
    assert (config.iptables.min_sync_period, config.ipvs.min_sync_period) == (2.0, 0.1)


def test_min_sync_period_round_trips_through_a_manifest_set_or_not() -> None:
    config = KubeProxyConfiguration(iptables=SyncPeriods(30.0, 1.0))
    manifest = to_manifest(config)
    assert manifest["iptables"]["minSyncPeriod"] == "1s"
    assert "minSyncPeriod" not in manifest["ipvs"]
    assert parse_object(manifest) == config
