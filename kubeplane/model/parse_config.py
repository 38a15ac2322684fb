"""The two configuration kinds: kube-proxy's own `KubeProxyConfiguration` and kubeplane's small addition.

`kubeproxy.config.k8s.io/v1alpha1 KubeProxyConfiguration` fields honoured (others kube-proxy knows are
accepted silently, anything else is warned about):
  mode (iptables | ipvs | nftables; "" = iptables), clusterCIDR (comma-separated, one per family),
  detectLocalMode, detectLocal.{bridgeInterface, interfaceNamePrefix} (the one its mode uses is required),
  nodePortAddresses (CIDRs or "primary"), syncPeriod/minSyncPeriod (defaults for all modes),
  iptables.{masqueradeAll, masqueradeBit, syncPeriod, minSyncPeriod},
  ipvs.{scheduler, strictARP, syncPeriod, minSyncPeriod}, nftables.{masqueradeAll, masqueradeBit, syncPeriod,
  minSyncPeriod}, conntrack.{maxPerCore, min, tcpEstablishedTimeout, tcpCloseWaitTimeout, udpTimeout,
  udpStreamTimeout}. Durations are Go durations: "30s", "500ms", "1m30s".

`kubeplane.dev/v1alpha1 KubeplaneConfiguration` fields:
  clusterDomain (default cluster.local), dnsServiceIP (default: the 10th address of the first ServiceCIDR),
  upstreamResolvers ("ip", "ip:port" or "[ipv6]:port"; none = non-cluster names are REFUSED),
  dnsTTL (seconds, 0-3600, default 5), dnsPodsMode (insecure | verified | disabled, CoreDNS's `pods`).
"""

from __future__ import annotations

from typing import Literal

from kubeplane.model.fields import E, Fields
from kubeplane.model.formats import dns1123_subdomain_problem, parse_cidr, parse_host_port
from kubeplane.model.objects import (
    ConntrackConfig,
    KubeplaneConfiguration,
    KubeProxyConfiguration,
    ObjectMeta,
    SyncPeriods,
)

ProxyMode = Literal["iptables", "ipvs", "nftables"]
DetectLocalMode = Literal["ClusterCIDR", "NodeCIDR", "BridgeInterface", "InterfaceNamePrefix"]
DnsPodsMode = Literal["insecure", "verified", "disabled"]

PROXY_MODES: tuple[ProxyMode, ...] = ("iptables", "ipvs", "nftables")
DETECT_LOCAL_MODES: tuple[DetectLocalMode, ...] = (
    "ClusterCIDR",
    "NodeCIDR",
    "BridgeInterface",
    "InterfaceNamePrefix",
)
IPVS_SCHEDULERS = ("rr", "wrr", "lc", "wlc", "lblc", "lblcr", "dh", "sh", "sed", "nq", "mh")
DNS_PODS_MODES: tuple[DnsPodsMode, ...] = ("insecure", "verified", "disabled")
MAX_DNS_TTL = 3600

# Fields of KubeProxyConfiguration about the process, not the data plane.
_PROCESS_FIELDS = (
    "featureGates",
    "clientConnection",
    "logging",
    "hostnameOverride",
    "bindAddress",
    "healthzBindAddress",
    "metricsBindAddress",
    "bindAddressHardFail",
    "enableProfiling",
    "showHiddenMetricsForVersion",
    "winkernel",
    "oomScoreAdj",
    "configSyncPeriod",
    "portRange",
)
# Linux interface names hold at most 15 characters (IFNAMSIZ - 1); iptables counts a prefix's `+` among them.
IFNAME_MAX = 15


def parse_kube_proxy_configuration(doc: Fields, meta: ObjectMeta) -> tuple[KubeProxyConfiguration, ...]:
    doc.ignore(*_PROCESS_FIELDS)
    mode = _enum_or_default(doc, "mode", PROXY_MODES, "iptables")
    defaults = _sync_periods(doc, SyncPeriods())
    iptables = doc.section("iptables")
    iptables.ignore("localhostNodePorts")
    nftables = doc.section("nftables")
    masquerading = nftables if mode == "nftables" else iptables
    masquerade_all = masquerading.flag("masqueradeAll") or False
    masquerade_bit = masquerading.int_in("masqueradeBit", 0, 31)
    other = iptables if masquerading is nftables else nftables
    other.ignore("masqueradeAll", "masqueradeBit")
    ipvs = doc.section("ipvs")
    ipvs.ignore("excludeCIDRs")
    for timeout in ("tcpTimeout", "tcpFinTimeout", "udpTimeout"):
        ipvs.duration(timeout)
    scheduler = ipvs.text("scheduler") or "rr"
    if scheduler not in IPVS_SCHEDULERS:
        ipvs.error("scheduler", f"must be one of {', '.join(IPVS_SCHEDULERS)}, got {scheduler!r}")
    detect_local_mode = _enum_or_default(doc, "detectLocalMode", DETECT_LOCAL_MODES, "ClusterCIDR")
    bridge_interface, interface_prefix = _detect_local(doc.section("detectLocal"), detect_local_mode)
    config = KubeProxyConfiguration(
        meta=meta,
        mode=mode,
        cluster_cidr=_cluster_cidr(doc),
        detect_local_mode=detect_local_mode,
        detect_local_bridge_interface=bridge_interface,
        detect_local_interface_name_prefix=interface_prefix,
        node_port_addresses=_node_port_addresses(doc),
        masquerade_all=masquerade_all,
        masquerade_bit=14 if masquerade_bit is None else masquerade_bit,
        iptables=_sync_periods(iptables, defaults),
        ipvs=_sync_periods(ipvs, defaults),
        nftables=_sync_periods(nftables, defaults),
        ipvs_scheduler=scheduler,
        ipvs_strict_arp=ipvs.flag("strictARP") or False,
        conntrack=_conntrack(doc.section("conntrack")),
    )
    for section in (iptables, ipvs, nftables):
        section.finish()
    return (config,)


def _enum_or_default(doc: Fields, name: str, allowed: tuple[E, ...], default: E) -> E:
    """kube-proxy reads an empty string as "the default" for its mode fields."""
    if doc.raw(name) == "":
        return default
    return doc.enum(name, allowed) or default


def _sync_periods(section: Fields, defaults: SyncPeriods) -> SyncPeriods:
    sync_period = section.duration("syncPeriod")
    min_sync_period = section.duration("minSyncPeriod")
    if sync_period is not None and sync_period <= 0:
        section.error("syncPeriod", "must be greater than 0")
        sync_period = None
    periods = SyncPeriods(
        sync_period=defaults.sync_period if sync_period is None else sync_period,
        min_sync_period=defaults.min_sync_period if min_sync_period is None else min_sync_period,
    )
    if periods.min_sync_period is not None and periods.min_sync_period > periods.sync_period:
        section.error("minSyncPeriod", "must not be greater than syncPeriod")
    return periods


def _detect_local(section: Fields, mode: DetectLocalMode) -> tuple[str, str]:
    """detectLocal's bridgeInterface and interfaceNamePrefix. As kube-proxy validates, the one that
    `mode` uses must be set; both must be names iptables accepts (`-i NAME` / `-i PREFIX+`)."""
    bridge = _interface_name(section, "bridgeInterface", IFNAME_MAX)
    prefix = _interface_name(section, "interfaceNamePrefix", IFNAME_MAX - 1)
    section.finish()
    for needed_by, name, value in (
        ("BridgeInterface", "bridgeInterface", bridge),
        ("InterfaceNamePrefix", "interfaceNamePrefix", prefix),
    ):
        if mode == needed_by and not value:
            section.error(name, f"must be set when detectLocalMode is {needed_by}")
    return bridge, prefix


def _interface_name(section: Fields, name: str, longest: int) -> str:
    text = section.text(name) or ""
    if len(text) > longest:
        section.error(name, f"must be at most {longest} characters, got {text!r}")
        return ""
    if any(c.isspace() or c in "/:!" for c in text):
        section.error(name, f"must be an interface name (no spaces, '/', ':' or '!'), got {text!r}")
        return ""
    return text


def _cluster_cidr(doc: Fields) -> str:
    text = doc.text("clusterCIDR") or ""
    networks = []
    for part in (p.strip() for p in text.split(",") if p.strip()):
        network = parse_cidr(part, strict=False)
        if isinstance(network, str):
            doc.error("clusterCIDR", network)
        else:
            networks.append(network)
    if len(networks) > 2 or (len(networks) == 2 and networks[0].version == networks[1].version):
        doc.error("clusterCIDR", "must hold at most one CIDR per IP family")
    return ",".join(str(n) for n in networks)


def _node_port_addresses(doc: Fields) -> tuple[str, ...]:
    found: list[str] = []
    for path, text in doc.texts("nodePortAddresses"):
        if text == "primary":
            found.append(text)
            continue
        network = parse_cidr(text, strict=False)
        if isinstance(network, str):
            doc.report.error(path, f"{network} (or 'primary')")
        else:
            found.append(str(network))
    return tuple(found)


def _conntrack(section: Fields) -> ConntrackConfig:
    defaults = ConntrackConfig()
    max_per_core = section.integer("maxPerCore")
    minimum = section.integer("min")
    for name, value in (("maxPerCore", max_per_core), ("min", minimum)):
        if value is not None and value < 0:
            section.error(name, f"must be 0 or more, got {value}")
    section.ignore("max", "tcpBeLiberal")
    config = ConntrackConfig(
        max_per_core=defaults.max_per_core if max_per_core is None else max_per_core,
        min=defaults.min if minimum is None else minimum,
        tcp_established_timeout=_or(
            section.duration("tcpEstablishedTimeout"), defaults.tcp_established_timeout
        ),
        tcp_close_wait_timeout=_or(section.duration("tcpCloseWaitTimeout"), defaults.tcp_close_wait_timeout),
        udp_timeout=_or(section.duration("udpTimeout"), defaults.udp_timeout),
        udp_stream_timeout=_or(section.duration("udpStreamTimeout"), defaults.udp_stream_timeout),
    )
    section.finish()
    return config


def _or(value: float | None, default: float | None) -> float | None:
    return default if value is None else value


def parse_kubeplane_configuration(doc: Fields, meta: ObjectMeta) -> tuple[KubeplaneConfiguration, ...]:
    defaults = KubeplaneConfiguration()
    domain = doc.text("clusterDomain")
    if domain is not None:
        problem = dns1123_subdomain_problem(domain.rstrip("."))
        if problem:
            doc.error("clusterDomain", problem)
            domain = None
    dns_ip = doc.ip("dnsServiceIP")
    resolvers: list[str] = []
    for path, text in doc.texts("upstreamResolvers"):
        parsed = parse_host_port(text)
        if isinstance(parsed, str):
            doc.report.error(path, parsed)
        else:
            resolvers.append(text)
    ttl = doc.int_in("dnsTTL", 0, MAX_DNS_TTL)
    config = KubeplaneConfiguration(
        meta=meta,
        cluster_domain=domain.rstrip(".") if domain else defaults.cluster_domain,
        dns_service_ip=str(dns_ip) if dns_ip else "",
        upstream_resolvers=tuple(resolvers),
        dns_ttl=defaults.dns_ttl if ttl is None else ttl,
        dns_pods_mode=doc.enum("dnsPodsMode", DNS_PODS_MODES) or defaults.dns_pods_mode,
    )
    return (config,)
