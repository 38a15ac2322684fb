"""Parsing and API-server validation of v1 Service manifests."""

from __future__ import annotations

import pytest
from model_helpers import FILE, parse, parse_one, single_error

from kubeplane.model.objects import LoadBalancerIngress, Service, ServicePort

FULL_SERVICE = """
apiVersion: v1
kind: Service
metadata:
  name: web
  namespace: shop
  labels: {tier: edge}
  annotations: {note: "kept"}
spec:
  type: LoadBalancer
  selector: {app: web}
  clusterIP: 10.96.5.5
  clusterIPs: [10.96.5.5, "fd00:10:96::5"]
  ipFamilies: [IPv4, IPv6]
  ipFamilyPolicy: RequireDualStack
  ports:
    - {name: http, protocol: TCP, port: 80, targetPort: http, nodePort: 30080, appProtocol: http}
    - {name: dns, protocol: UDP, port: 53, targetPort: 5353}
    - {name: sctp, protocol: SCTP, port: 9000}
  externalIPs: [192.0.2.50]
  loadBalancerIP: 192.0.2.10
  loadBalancerSourceRanges: [203.0.113.0/25]
  sessionAffinity: ClientIP
  sessionAffinityConfig: {clientIP: {timeoutSeconds: 60}}
  externalTrafficPolicy: Local
  internalTrafficPolicy: Local
  healthCheckNodePort: 31000
  publishNotReadyAddresses: true
  trafficDistribution: PreferClose
  allocateLoadBalancerNodePorts: false
status:
  loadBalancer:
    ingress:
      - {ip: 192.0.2.10, ipMode: Proxy}
      - {hostname: lb.example.org}
"""


def test_every_service_field_is_parsed() -> None:
    service = parse_one(FULL_SERVICE)
    assert isinstance(service, Service)
    assert service.meta.key == "shop/web"
    assert service.meta.labels == {"tier": "edge"}
    assert service.meta.annotations == {"note": "kept"}
    assert service.type == "LoadBalancer"
    assert service.selector == {"app": "web"}
    assert service.cluster_ips == ("10.96.5.5", "fd00:10:96::5")
    assert service.ip_families == ("IPv4", "IPv6")
    assert service.ip_family_policy == "RequireDualStack"
    assert service.ports == (
        ServicePort(80, "TCP", "http", "http", 30080, "http"),
        ServicePort(53, "UDP", "dns", 5353),
        ServicePort(9000, "SCTP", "sctp", 9000),
    )
    assert service.external_ips == ("192.0.2.50",)
    assert service.load_balancer_ip == "192.0.2.10"
    assert service.load_balancer_source_ranges == ("203.0.113.0/25",)
    assert service.load_balancer_ingress == (
        LoadBalancerIngress(ip="192.0.2.10", ip_mode="Proxy"),
        LoadBalancerIngress(hostname="lb.example.org"),
    )
    assert service.session_affinity == "ClientIP"
    assert service.session_affinity_timeout == 60
    assert service.external_traffic_policy == "Local"
    assert service.internal_traffic_policy == "Local"
    assert service.health_check_node_port == 31000
    assert service.publish_not_ready_addresses is True
    assert service.traffic_distribution == "PreferClose"
    assert service.allocate_load_balancer_node_ports is False
    assert service.meta.source is not None and str(service.meta.source) == f"{FILE}#0"


def test_minimal_service_gets_api_defaults() -> None:
    service = parse_one("""
        apiVersion: v1
        kind: Service
        metadata: {name: api}
        spec:
          ports: [{port: 8080}]
    """)
    assert isinstance(service, Service)
    assert service.meta.namespace == "default"
    assert service.type == "ClusterIP"
    assert service.selector is None
    assert service.cluster_ips == () and not service.headless
    assert service.ports == (ServicePort(8080, "TCP", "", 8080),)
    assert service.session_affinity == "None" and service.session_affinity_timeout == 10800
    assert service.external_traffic_policy == "Cluster"


def test_cluster_ip_none_means_headless_without_ports() -> None:
    service = parse_one("""
        apiVersion: v1
        kind: Service
        metadata: {name: db}
        spec: {clusterIP: None, selector: {app: db}}
    """)
    assert isinstance(service, Service)
    assert service.headless and service.cluster_ips == ()


def test_external_name_service_keeps_its_name() -> None:
    service = parse_one("""
        apiVersion: v1
        kind: Service
        metadata: {name: search}
        spec: {type: ExternalName, externalName: example.org}
    """)
    assert isinstance(service, Service)
    assert service.external_name == "example.org" and service.ip_families == ()


def _service(spec: str, name: str = "web") -> str:
    return f"apiVersion: v1\nkind: Service\nmetadata: {{name: {name}, namespace: shop}}\nspec:\n{spec}"


@pytest.mark.parametrize(
    ("spec", "field", "message"),
    [
        ("  ports: [{port: 70000}]", "spec.ports[0].port", "must be between 1 and 65535, got 70000"),
        ("  ports: [{port: http}]", "spec.ports[0].port", "must be an integer, got string 'http'"),
        ("  ports: [{port: 80, protocol: HTTP}]", "spec.ports[0].protocol", "must be one of TCP, UDP, SCTP"),
        ("  type: Internal\n  ports: [{port: 80}]", "spec.type", "must be one of ClusterIP, NodePort"),
        (
            "  type: NodePort\n  ports: [{port: 80, nodePort: 80}]",
            "spec.ports[0].nodePort",
            "must be between 30000 and 32767, got 80",
        ),
        (
            "  ports: [{port: 80, nodePort: 30001}]",
            "spec.ports[0].nodePort",
            "may not be used when `type` is",
        ),
        (
            "  type: ExternalName\n  externalName: example.org\n  selector: {app: x}",
            "spec.selector",
            "must not be set for ExternalName",
        ),
        ("  type: ExternalName", "spec.externalName", "required field is missing"),
        ("  type: ExternalName\n  externalName: Not_A_Name", "spec.externalName", "RFC 1123 subdomain"),
        ("  clusterIP: 10.96.0.300\n  ports: [{port: 80}]", "spec.clusterIP", "must be a valid IP address"),
        ("  type: NodePort\n  clusterIP: None\n  ports: [{port: 80}]", "spec.clusterIP", "may not be 'None'"),
        (
            "  clusterIP: 10.96.0.5\n  clusterIPs: [10.96.0.6]\n  ports: [{port: 80}]",
            "spec.clusterIPs[0]",
            "must match spec.clusterIP",
        ),
        (
            "  ports: [{name: a, port: 80}, {name: a, port: 81}]",
            "spec.ports[1].name",
            "duplicate port name 'a'",
        ),
        (
            "  ports: [{name: a, port: 80}, {port: 81}]",
            "spec.ports[1].name",
            "required when a service has more",
        ),
        ("  ports: [{name: a, port: 80}, {name: b, port: 80}]", "spec.ports[1].port", "duplicate 80/TCP"),
        ("  ports: [{port: 80, targetPort: 0}]", "spec.ports[0].targetPort", "must be between 1 and 65535"),
        ("  ports: [{port: 80, targetPort: Web_Port}]", "spec.ports[0].targetPort", "IANA service name"),
        (
            "  selector: {app: 1}\n  ports: [{port: 80}]",
            "spec.selector.app",
            "must be a string, got integer 1",
        ),
        ("  externalIPs: [nope]\n  ports: [{port: 80}]", "spec.externalIPs[0]", "must be a valid IP address"),
        (
            "  loadBalancerSourceRanges: [10.0.0.0/8]\n  ports: [{port: 80}]",
            "spec.loadBalancerSourceRanges",
            "may only be used when `type` is 'LoadBalancer'",
        ),
        (
            "  sessionAffinityConfig: {clientIP: {timeoutSeconds: 5}}\n  ports: [{port: 80}]",
            "spec.sessionAffinityConfig",
            "must not be set when sessionAffinity is None",
        ),
        (
            "  sessionAffinity: ClientIP\n  sessionAffinityConfig: {clientIP: {timeoutSeconds: 0}}\n"
            "  ports: [{port: 80}]",
            "spec.sessionAffinityConfig.clientIP.timeoutSeconds",
            "must be between 1 and 86400",
        ),
        (
            "  externalTrafficPolicy: Local\n  ports: [{port: 80}]",
            "spec.externalTrafficPolicy",
            "may only be set for externally-accessible services",
        ),
        (
            "  type: NodePort\n  healthCheckNodePort: 31000\n  ports: [{port: 80}]",
            "spec.healthCheckNodePort",
            "may only be set when `type` is 'LoadBalancer'",
        ),
        ("  ports: []", "spec.ports", "required for ClusterIP services"),
        (
            "  ipFamilies: [IPv4, IPv6]\n  ipFamilyPolicy: SingleStack\n  ports: [{port: 80}]",
            "spec.ipFamilyPolicy",
            "SingleStack allows only one IP family",
        ),
        ("  ipFamilies: [IPv5]\n  ports: [{port: 80}]", "spec.ipFamilies[0]", "must be one of IPv4, IPv6"),
        (
            "  clusterIPs: [10.96.0.5, 10.96.0.6]\n  ipFamilyPolicy: PreferDualStack\n  ports: [{port: 80}]",
            "spec.clusterIPs",
            "one address per IP family",
        ),
        (
            "  trafficDistribution: Anywhere\n  ports: [{port: 80}]",
            "spec.trafficDistribution",
            "must be one of",
        ),
        (
            "  publishNotReadyAddresses: yes please\n  ports: [{port: 80}]",
            "spec.publishNotReadyAddresses",
            "boolean",
        ),
    ],
)
def test_invalid_service_field_is_one_line_naming_file_object_and_field(
    spec: str, field: str, message: str
) -> None:
    line = single_error(_service(spec))
    assert line.startswith(f"{FILE}#0 Service shop/web: {field}: "), line
    assert message in line
    assert "\n" not in line


def test_load_balancer_ingress_on_cluster_ip_service_is_refused() -> None:
    text = _service("  ports: [{port: 80}]") + "\nstatus: {loadBalancer: {ingress: [{ip: 192.0.2.1}]}}"
    assert "status.loadBalancer.ingress: may only be used when `spec.type` is 'LoadBalancer'" in single_error(
        text
    )


def test_service_name_must_be_a_dns_1035_label() -> None:
    line = single_error(_service("  ports: [{port: 80}]", name="9lives"))
    assert "metadata.name: must be a lowercase RFC 1035 label" in line


def test_unknown_service_field_is_a_warning_not_an_error() -> None:
    parsed = parse(_service("  ports: [{port: 80}]\n  frobnicate: true"))
    assert len(parsed.objects) == 1
    assert parsed.warnings == (f"{FILE}#0 Service shop/web: spec.frobnicate: unknown field, ignored",)


def test_every_problem_in_a_document_is_reported_at_once() -> None:
    text = _service("  type: Bogus\n  ports: [{port: 0}, {name: b, port: 99999}]")
    with pytest.raises(Exception) as caught:
        parse(text)
    assert str(caught.value).count("\n") >= 2
