"""Parsing Pods, Nodes, Namespaces and ServiceCIDRs."""

from __future__ import annotations

import pytest
from model_helpers import FILE, parse, parse_one, single_error

from kubeplane.model.objects import Container, ContainerPort, Namespace, Node, NodeAddress, Pod, ServiceCIDR


def test_every_pod_field_is_parsed_and_container_noise_is_silent() -> None:
    parsed = parse("""
        apiVersion: v1
        kind: Pod
        metadata:
          name: db-0
          namespace: shop
          labels: {app: db}
          annotations: {kubeplane.dev/workload: echo}
          deletionTimestamp: "2024-05-01T10:00:00Z"
        spec:
          nodeName: node-a
          hostname: db-0
          subdomain: db
          hostNetwork: false
          restartPolicy: Always
          containers:
            - name: postgres
              image: postgres:16
              env: [{name: A, value: b}]
              ports:
                - {name: pg, containerPort: 5432, protocol: TCP}
                - {name: metrics, containerPort: 9187, protocol: UDP, hostPort: 9187}
        status:
          phase: Running
          podIP: 10.244.1.7
          podIPs: [{ip: 10.244.1.7}, {ip: "fd00:244::7"}]
          hostIP: 198.51.100.2
          conditions:
            - {type: PodScheduled, status: "True"}
            - {type: Ready, status: "False", lastTransitionTime: "2024-05-01T10:00:00Z"}
    """)
    assert parsed.warnings == ()
    (pod,) = parsed.objects
    assert isinstance(pod, Pod)
    assert pod.meta.labels == {"app": "db"} and pod.meta.annotations == {"kubeplane.dev/workload": "echo"}
    assert pod.meta.deletion_timestamp == "2024-05-01T10:00:00Z"
    assert (pod.node_name, pod.hostname, pod.subdomain, pod.host_network) == ("node-a", "db-0", "db", False)
    assert pod.containers == (
        Container("postgres", (ContainerPort(5432, "TCP", "pg"), ContainerPort(9187, "UDP", "metrics"))),
    )
    assert pod.pod_ips == ("10.244.1.7", "fd00:244::7")
    assert pod.phase == "Running" and pod.ready is False


def test_pod_without_status_is_running_with_readiness_unstated() -> None:
    pod = parse_one("apiVersion: v1\nkind: Pod\nmetadata: {name: p}\nspec: {containers: [{name: c}]}\n")
    assert isinstance(pod, Pod)
    assert (pod.phase, pod.ready, pod.pod_ips, pod.node_name) == ("Running", None, (), "")


def _pod(spec: str, status: str = "{}") -> str:
    head = "apiVersion: v1\nkind: Pod\nmetadata: {name: p, namespace: shop}\n"
    return f"{head}spec:\n{spec}\nstatus: {status}\n"


@pytest.mark.parametrize(
    ("spec", "status", "field", "message"),
    [
        ("  containers: []", "{}", "spec.containers", "at least one container"),
        (
            "  containers: [{name: c, ports: [{containerPort: 0}]}]",
            "{}",
            "spec.containers[0].ports[0].containerPort",
            "between 1 and 65535",
        ),
        (
            "  containers: [{name: c, ports: [{name: http, containerPort: 1},"
            " {name: http, containerPort: 2}]}]",
            "{}",
            "spec.containers[0].ports[1].name",
            "duplicate port name 'http'",
        ),
        (
            "  containers: [{name: c, ports: [{name: 1234, containerPort: 1}]}]",
            "{}",
            "spec.containers[0].ports[0].name",
            "must be a string",
        ),
        (
            "  containers: [{name: c, ports: [{name: too-long-port-name, containerPort: 1}]}]",
            "{}",
            "spec.containers[0].ports[0].name",
            "no more than 15 characters",
        ),
        ("  containers: [{name: c}, {name: c}]", "{}", "spec.containers[1].name", "duplicate container name"),
        ("  hostname: Not_Valid\n  containers: [{name: c}]", "{}", "spec.hostname", "RFC 1123 label"),
        ("  containers: [{name: c}]", "{podIP: 10.244.1.999}", "status.podIP", "must be a valid IP address"),
        ("  containers: [{name: c}]", "{phase: Sleeping}", "status.phase", "must be one of Pending, Running"),
        (
            "  containers: [{name: c}]",
            "{podIP: 10.0.0.1, podIPs: [{ip: 10.0.0.2}]}",
            "status.podIPs[0].ip",
            "must match status.podIP",
        ),
    ],
)
def test_invalid_pod_field_names_file_object_and_field(
    spec: str, status: str, field: str, message: str
) -> None:
    line = single_error(_pod(spec, status))
    assert line.startswith(f"{FILE}#0 Pod shop/p: {field}: "), line
    assert message in line


def test_every_node_field_is_parsed() -> None:
    node = parse_one("""
        apiVersion: v1
        kind: Node
        metadata: {name: node-a, labels: {topology.kubernetes.io/zone: zone-a}}
        spec: {podCIDR: 10.244.1.0/24, podCIDRs: [10.244.1.0/24, "fd00:244:1::/64"], taints: []}
        status:
          addresses: [{type: InternalIP, address: 198.51.100.2}, {type: Hostname, address: node-a}]
          capacity: {cpu: "2"}
    """)
    assert isinstance(node, Node)
    assert node.zone == "zone-a"
    assert node.pod_cidrs == ("10.244.1.0/24", "fd00:244:1::/64")
    assert node.addresses == (NodeAddress("InternalIP", "198.51.100.2"), NodeAddress("Hostname", "node-a"))
    assert node.meta.namespace == ""


@pytest.mark.parametrize(
    ("body", "field", "message"),
    [
        (
            "spec: {podCIDR: 10.244.1.5/24}",
            "spec.podCIDR",
            "must be a network address (did you mean 10.244.1.0/24?)",
        ),
        (
            "spec: {podCIDR: 10.244.1.0/24, podCIDRs: [10.244.2.0/24]}",
            "spec.podCIDRs[0]",
            "must match spec.podCIDR",
        ),
        (
            "status: {addresses: [{type: InternalIP, address: banana}]}",
            "status.addresses[0].address",
            "must be a valid IP address",
        ),
        (
            "status: {addresses: [{type: Public, address: 1.2.3.4}]}",
            "status.addresses[0].type",
            "must be one of",
        ),
    ],
)
def test_invalid_node_field_names_file_object_and_field(body: str, field: str, message: str) -> None:
    line = single_error(f"apiVersion: v1\nkind: Node\nmetadata: {{name: node-a}}\n{body}\n")
    assert line.startswith(f"{FILE}#0 Node node-a: {field}: "), line
    assert message in line


def test_namespace_on_cluster_scoped_object_is_dropped_with_a_warning() -> None:
    parsed = parse("apiVersion: v1\nkind: Node\nmetadata: {name: n, namespace: shop}\n")
    (node,) = parsed.objects
    assert node.meta.namespace == "" and "metadata.namespace: ignored" in parsed.warnings[0]


def test_namespace_and_service_cidr_are_parsed() -> None:
    parsed = parse("""
        apiVersion: v1
        kind: Namespace
        metadata: {name: shop}
        ---
        apiVersion: networking.k8s.io/v1
        kind: ServiceCIDR
        metadata: {name: extra}
        spec: {cidrs: [10.100.0.0/16, "fd00:100::/108"]}
    """)
    namespace, cidr = parsed.objects
    assert isinstance(namespace, Namespace) and namespace.meta.name == "shop"
    assert isinstance(cidr, ServiceCIDR) and cidr.cidrs == ("10.100.0.0/16", "fd00:100::/108")


def test_service_cidr_must_hold_network_addresses() -> None:
    line = single_error(
        "apiVersion: networking.k8s.io/v1\nkind: ServiceCIDR\nmetadata: {name: x}\n"
        "spec: {cidrs: [10.100.0.1/16]}\n"
    )
    assert line.startswith(f"{FILE}#0 ServiceCIDR x: spec.cidrs[0]: must be a network address")
