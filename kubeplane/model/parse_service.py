"""`v1 Service`: every spec field kube-proxy and CoreDNS read, validated like the API server does.

Accepted: spec.{type, selector, clusterIP, clusterIPs ("None" = headless), ipFamilies, ipFamilyPolicy,
ports[].{name, protocol, port, targetPort (number or container port name), nodePort, appProtocol},
externalIPs, loadBalancerIP, loadBalancerSourceRanges, sessionAffinity,
sessionAffinityConfig.clientIP.timeoutSeconds, externalTrafficPolicy, internalTrafficPolicy,
healthCheckNodePort, publishNotReadyAddresses, externalName, trafficDistribution,
allocateLoadBalancerNodePorts, loadBalancerClass (ignored)}, status.loadBalancer.ingress[].{ip, hostname,
ipMode}. nodePorts must lie in 30000-32767.

Allocation (clusterIPs, nodePorts, healthCheckNodePort) and IP-family defaulting happen later, in
`complete.py`, because they depend on the whole cluster: here an unset clusterIP stays empty, and unset
`ipFamilies` stays `()` so completion can tell "not given" from "IPv4 asked for".
"""

from __future__ import annotations

from kubeplane.model.fields import Fields
from kubeplane.model.formats import (
    IPAddress,
    dns1123_label_problem,
    dns1123_subdomain_problem,
    port_name_problem,
)
from kubeplane.model.objects import (
    DEFAULT_AFFINITY_TIMEOUT_SECONDS,
    IPFamily,
    IPFamilyPolicy,
    IPMode,
    LoadBalancerIngress,
    ObjectMeta,
    Protocol,
    Service,
    ServicePort,
    ServiceType,
    SessionAffinity,
    TrafficPolicy,
)

SERVICE_TYPES: tuple[ServiceType, ...] = ("ClusterIP", "NodePort", "LoadBalancer", "ExternalName")
PROTOCOLS: tuple[Protocol, ...] = ("TCP", "UDP", "SCTP")
IP_FAMILIES: tuple[IPFamily, ...] = ("IPv4", "IPv6")
IP_FAMILY_POLICIES: tuple[IPFamilyPolicy, ...] = ("SingleStack", "PreferDualStack", "RequireDualStack")
TRAFFIC_POLICIES: tuple[TrafficPolicy, ...] = ("Cluster", "Local")
AFFINITIES: tuple[SessionAffinity, ...] = ("None", "ClientIP")
IP_MODES: tuple[IPMode, ...] = ("VIP", "Proxy")
TRAFFIC_DISTRIBUTIONS = ("PreferClose", "PreferSameZone", "PreferSameNode")
NODE_PORT_MIN = 30000
NODE_PORT_MAX = 32767
MAX_AFFINITY_TIMEOUT_SECONDS = 86400
EXTERNAL_TYPES = ("NodePort", "LoadBalancer")


def parse_service(doc: Fields, meta: ObjectMeta) -> tuple[Service, ...]:
    spec = doc.section("spec")
    spec.ignore("loadBalancerClass")
    service_type = spec.enum("type", SERVICE_TYPES) or "ClusterIP"
    cluster_ips, headless = _cluster_ips(spec, service_type)
    families, policy = _ip_families(spec, service_type, cluster_ips)
    ports = _ports(spec, service_type, headless)
    external_ips = tuple(str(ip) for ip in spec.ip_list("externalIPs"))
    load_balancer_ip = spec.ip("loadBalancerIP")
    source_ranges = tuple(str(net) for net in spec.cidr_list("loadBalancerSourceRanges", strict=False))
    if source_ranges and service_type != "LoadBalancer":
        spec.error("loadBalancerSourceRanges", "may only be used when `type` is 'LoadBalancer'")
    affinity, affinity_timeout = _session_affinity(spec)
    external_policy = _external_traffic_policy(spec, service_type, external_ips)
    allocate_node_ports = spec.flag("allocateLoadBalancerNodePorts")
    if allocate_node_ports is not None and service_type != "LoadBalancer":
        spec.error("allocateLoadBalancerNodePorts", "may only be used when `type` is 'LoadBalancer'")
    service = Service(
        meta=meta,
        type=service_type,
        selector=_selector(spec, service_type),
        cluster_ips=cluster_ips,
        headless=headless,
        ip_families=families,
        ip_family_policy=policy,
        ports=ports,
        external_ips=external_ips,
        load_balancer_ip=str(load_balancer_ip) if load_balancer_ip else None,
        load_balancer_source_ranges=source_ranges,
        load_balancer_ingress=_ingress(doc, service_type),
        session_affinity=affinity,
        session_affinity_timeout=affinity_timeout,
        external_traffic_policy=external_policy,
        internal_traffic_policy=spec.enum("internalTrafficPolicy", TRAFFIC_POLICIES) or "Cluster",
        health_check_node_port=_health_check_node_port(spec, service_type, external_policy),
        publish_not_ready_addresses=spec.flag("publishNotReadyAddresses") or False,
        external_name=_external_name(spec, service_type),
        traffic_distribution=spec.enum("trafficDistribution", TRAFFIC_DISTRIBUTIONS),
        allocate_load_balancer_node_ports=allocate_node_ports is not False,
    )
    spec.finish()
    return (service,)


def _selector(spec: Fields, service_type: str) -> dict[str, str] | None:
    selector = spec.string_map("selector", check_labels=True)
    if selector and service_type == "ExternalName":
        spec.error("selector", "must not be set for ExternalName services (they have no endpoints)")
        return None
    return selector or None


def _cluster_ips(spec: Fields, service_type: str) -> tuple[tuple[str, ...], bool]:
    """(clusterIPs as given, headless). `clusterIP` and `clusterIPs[0]` must agree when both are set."""
    single = spec.text("clusterIP")
    listed = spec.texts("clusterIPs")
    texts = [text for _, text in listed] or ([single] if single else [])
    if single and listed and listed[0][1] != single:
        spec.error("clusterIPs[0]", f"must match spec.clusterIP {single!r}, got {listed[0][1]!r}")
        return (), False
    if not texts:
        return (), False
    if service_type == "ExternalName":
        spec.error("clusterIP", "must be empty for ExternalName services")
        return (), False
    if texts[0] == "None":
        if len(texts) > 1:
            spec.error("clusterIPs", "must hold only 'None' for a headless service")
        if service_type in EXTERNAL_TYPES:
            spec.error("clusterIP", f"may not be 'None' for {service_type} services")
        return (), True
    if len(texts) > 2:
        spec.error("clusterIPs", f"must hold at most 2 addresses, got {len(texts)}")
        return (), False
    addresses: list[IPAddress] = []
    for i, text in enumerate(texts):
        path = f"clusterIPs[{i}]" if listed else "clusterIP"
        address = spec.parse_address(path, text)
        if address is not None:
            addresses.append(address)
    if len(addresses) == 2 and addresses[0].version == addresses[1].version:
        spec.error("clusterIPs", "must hold one address per IP family (one IPv4, one IPv6)")
        return (), False
    return tuple(str(a) for a in addresses), False


def _ip_families(
    spec: Fields, service_type: str, cluster_ips: tuple[str, ...]
) -> tuple[tuple[IPFamily, ...], IPFamilyPolicy | None]:
    policy = spec.enum("ipFamilyPolicy", IP_FAMILY_POLICIES)
    families: list[IPFamily] = []
    for path, text in spec.texts("ipFamilies"):
        family = next((f for f in IP_FAMILIES if f == text), None)
        if family is None:
            spec.report.error(path, f"must be one of IPv4, IPv6, got {text!r}")
        elif family in families:
            spec.report.error(path, f"duplicate family {text!r}")
        else:
            families.append(family)
    if service_type == "ExternalName":
        return (), None
    ip_families: tuple[IPFamily, ...] = tuple("IPv4" if ":" not in ip else "IPv6" for ip in cluster_ips)
    for i, (given, actual) in enumerate(zip(families, ip_families, strict=False)):
        if given != actual:
            spec.error(f"ipFamilies[{i}]", f"is {given} but clusterIPs[{i}] is {actual}")
    if len(families) > 1 or len(cluster_ips) > 1:
        if policy is None:
            spec.error("ipFamilyPolicy", "must be PreferDualStack or RequireDualStack with two IP families")
        elif policy == "SingleStack":
            spec.error("ipFamilyPolicy", "SingleStack allows only one IP family")
    return tuple(families) or ip_families, policy


def _ports(spec: Fields, service_type: str, headless: bool) -> tuple[ServicePort, ...]:
    entries = spec.subs("ports")
    if not spec.raw("ports") and service_type != "ExternalName" and not headless:
        spec.error("ports", f"required for {service_type} services (only headless and ExternalName omit it)")
    names: dict[str, int] = {}
    seen_ports: dict[tuple[int, str], int] = {}
    ports: list[ServicePort] = []
    for i, entry in enumerate(entries):
        port = entry.port("port", required=True)
        protocol = entry.enum("protocol", PROTOCOLS) or "TCP"
        name = entry.checked("name", dns1123_label_problem) or ""
        if not name and len(entries) > 1:
            entry.error("name", "required when a service has more than one port")
        elif name in names:
            entry.error("name", f"duplicate port name {name!r} (also spec.ports[{names[name]}])")
        names.setdefault(name, i)
        if port is not None:
            if (port, protocol) in seen_ports:
                first = seen_ports[port, protocol]
                entry.error("port", f"duplicate {port}/{protocol} (also spec.ports[{first}])")
            seen_ports.setdefault((port, protocol), i)
        node_port = entry.int_in("nodePort", NODE_PORT_MIN, NODE_PORT_MAX)
        if node_port is not None and service_type not in EXTERNAL_TYPES:
            entry.error("nodePort", f"may not be used when `type` is '{service_type}'")
            node_port = None
        app_protocol = entry.text("appProtocol")
        target_port = _target_port(entry)
        entry.finish()
        if port is not None:
            ports.append(
                ServicePort(
                    port=port,
                    protocol=protocol,
                    name=name,
                    target_port=target_port or port,
                    node_port=node_port,
                    app_protocol=app_protocol,
                )
            )
    return tuple(ports)


def _target_port(entry: Fields) -> int | str | None:
    """An int port, or the name of a container port (IANA service name); None = same as `port`."""
    value = entry.raw("targetPort")
    if value is None:
        return None
    if isinstance(value, str):
        return entry.checked("targetPort", port_name_problem)
    return entry.port("targetPort")


def _session_affinity(spec: Fields) -> tuple[SessionAffinity, int]:
    affinity = spec.enum("sessionAffinity", AFFINITIES) or "None"
    config = spec.sub("sessionAffinityConfig")
    if config is None:
        return affinity, DEFAULT_AFFINITY_TIMEOUT_SECONDS
    if affinity == "None":
        spec.error("sessionAffinityConfig", "must not be set when sessionAffinity is None")
    client_ip = config.section("clientIP")
    timeout = client_ip.int_in("timeoutSeconds", 1, MAX_AFFINITY_TIMEOUT_SECONDS)
    client_ip.finish()
    config.finish()
    return affinity, timeout or DEFAULT_AFFINITY_TIMEOUT_SECONDS


def _external_traffic_policy(spec: Fields, service_type: str, external_ips: tuple[str, ...]) -> TrafficPolicy:
    policy = spec.enum("externalTrafficPolicy", TRAFFIC_POLICIES)
    if policy is not None and service_type not in EXTERNAL_TYPES and not external_ips:
        spec.error("externalTrafficPolicy", "may only be set for externally-accessible services")
    return policy or "Cluster"


def _health_check_node_port(spec: Fields, service_type: str, external_policy: str) -> int | None:
    port = spec.int_in("healthCheckNodePort", NODE_PORT_MIN, NODE_PORT_MAX)
    if port is not None and (service_type != "LoadBalancer" or external_policy != "Local"):
        spec.error(
            "healthCheckNodePort",
            "may only be set when `type` is 'LoadBalancer' and `externalTrafficPolicy` is 'Local'",
        )
        return None
    return port


def _external_name(spec: Fields, service_type: str) -> str | None:
    name = spec.text("externalName", required=service_type == "ExternalName")
    if name is None:
        return None
    if service_type != "ExternalName":
        spec.warn("externalName", f"ignored for {service_type} services")
        return None
    problem = dns1123_subdomain_problem(name.rstrip("."))
    if problem:
        spec.error("externalName", problem)
        return None
    return name


def _ingress(doc: Fields, service_type: str) -> tuple[LoadBalancerIngress, ...]:
    status = doc.sub("status")
    if status is None:
        return ()
    balancer = status.section("loadBalancer")
    status.ignore("conditions")
    entries = balancer.subs("ingress")
    if entries and service_type != "LoadBalancer":
        balancer.error("ingress", "may only be used when `spec.type` is 'LoadBalancer'")
        entries = []
    ingress: list[LoadBalancerIngress] = []
    for entry in entries:
        address = entry.ip("ip")
        hostname = entry.checked("hostname", dns1123_subdomain_problem)
        mode = entry.enum("ipMode", IP_MODES)
        if mode is not None and address is None:
            entry.error("ipMode", "may only be set together with ip")
        entry.ignore("ports")
        entry.finish()
        ingress.append(LoadBalancerIngress(str(address) if address else None, hostname, mode))
    balancer.finish()
    status.finish()
    return tuple(ingress)
