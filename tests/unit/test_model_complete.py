"""What build_cluster fills in (allocation, placement, defaults) and the cross-object errors it raises."""

from __future__ import annotations

import ipaddress
import os
import random
import subprocess
import sys
import textwrap
from dataclasses import replace
from pathlib import Path

import pytest

from kubeplane.model.complete import build_cluster
from kubeplane.model.errors import ManifestErrors
from kubeplane.model.objects import Cluster, KubeObject, Service
from kubeplane.model.parse import parse_text


def objects(*files: str) -> list[KubeObject]:
    """Objects of several YAML texts, the n-th named `f<n>.yaml`."""
    return [
        obj for i, text in enumerate(files) for obj in parse_text(textwrap.dedent(text), f"f{i}.yaml").objects
    ]


def cluster_of(*files: str) -> Cluster:
    return build_cluster(objects(*files))


def errors_of(*files: str) -> list[str]:
    with pytest.raises(ManifestErrors) as caught:
        cluster_of(*files)
    return [str(e) for e in caught.value.errors]


def service(name: str, spec: str = "ports: [{port: 80}]", namespace: str = "default") -> str:
    meta = f"metadata: {{name: {name}, namespace: {namespace}}}"
    return f"apiVersion: v1\nkind: Service\n{meta}\nspec: {{{spec}}}\n"


def pod(name: str, extra: str = "", namespace: str = "default") -> str:
    return (
        f"apiVersion: v1\nkind: Pod\nmetadata: {{name: {name}, namespace: {namespace}}}\n"
        f"spec: {{containers: [{{name: c}}]{extra}}}\n"
    )


def node(name: str, body: str = "") -> str:
    return f"apiVersion: v1\nkind: Node\nmetadata: {{name: {name}}}\n{body}\n"


def by_name(cluster: Cluster, name: str) -> Service:
    return next(s for s in cluster.services if s.meta.name == name)


def test_empty_input_gives_one_default_node_and_the_default_namespaces() -> None:
    cluster = build_cluster([])
    (only,) = cluster.nodes
    assert (only.meta.name, only.internal_ips, only.pod_cidrs) == (
        "node-1",
        ("198.51.100.2",),
        ("10.244.1.0/24",),
    )
    assert [n.meta.name for n in cluster.namespaces] == ["default", "kube-system"]
    assert [c.cidrs for c in cluster.service_cidrs] == [("10.96.0.0/12",)]
    assert cluster.kubeplane_config.dns_service_ip == "10.96.0.10"


def test_nodes_get_addresses_and_pod_cidrs_in_name_order_skipping_taken_ones() -> None:
    cluster = cluster_of(
        node("node-c"),
        node("node-a", "status: {addresses: [{type: InternalIP, address: 198.51.100.3}]}"),
        node("node-b", "spec: {podCIDR: 10.244.1.0/24}"),
    )
    assert [(n.meta.name, n.internal_ips[0], n.pod_cidrs[0]) for n in cluster.nodes] == [
        ("node-a", "198.51.100.3", "10.244.2.0/24"),
        ("node-b", "198.51.100.4", "10.244.1.0/24"),
        ("node-c", "198.51.100.5", "10.244.3.0/24"),
    ]


def test_default_pod_cidrs_come_from_kube_proxy_cluster_cidr() -> None:
    proxy = "apiVersion: kubeproxy.config.k8s.io/v1alpha1\nkind: KubeProxyConfiguration\n"
    proxy += "clusterCIDR: 10.50.0.0/16\n"
    assert cluster_of(proxy).nodes[0].pod_cidrs == ("10.50.1.0/24",)


def test_nodes_are_implied_by_pod_node_names_when_none_are_given() -> None:
    cluster = cluster_of(pod("a", ", nodeName: worker-2"), pod("b", ", nodeName: worker-1"))
    assert [n.meta.name for n in cluster.nodes] == ["worker-1", "worker-2"]


def test_pods_are_placed_and_addressed_from_their_node_pod_cidr() -> None:
    pods = [pod(f"p{i}") for i in range(20)]
    cluster = cluster_of(node("node-a"), node("node-b"), *pods)
    nodes = {n.meta.name: ipaddress.ip_network(n.pod_cidrs[0]) for n in cluster.nodes}
    assert {p.node_name for p in cluster.pods} == {"node-a", "node-b"}
    addresses = [p.pod_ip for p in cluster.pods]
    assert len(set(addresses)) == 20
    for placed in cluster.pods:
        address = ipaddress.ip_address(placed.pod_ip or "")
        network = nodes[placed.node_name]
        assert address in network
        assert int(address) - int(network.network_address) >= 2
        assert address != network.broadcast_address


def test_host_network_pod_takes_its_node_address() -> None:
    cluster = cluster_of(node("n"), pod("agent", ", hostNetwork: true"))
    assert cluster.pods[0].pod_ips == ("198.51.100.2",)


def test_completion_does_not_depend_on_input_order() -> None:
    files = [node("a"), node("b"), *(pod(f"p{i}") for i in range(8)), *(service(f"s{i}") for i in range(8))]
    shuffled = list(files)
    random.Random(3).shuffle(shuffled)
    assert cluster_of(*files) == cluster_of(*shuffled)


def test_adding_a_service_or_pod_moves_no_other_allocation() -> None:
    services = [service(f"svc-{i}", "type: NodePort, ports: [{port: 80}]") for i in range(60)]
    pods = [pod(f"pod-{i}") for i in range(60)]
    before = cluster_of(node("a"), node("b"), *services, *pods)
    after = cluster_of(
        node("a"),
        node("b"),
        *services,
        *pods,
        service("aaa-new", "type: NodePort, ports: [{port: 80}]"),
        pod("aaa-new"),
    )
    old = {s.meta.key: (s.cluster_ips, s.ports) for s in before.services}
    assert {
        k: v for k, v in ((s.meta.key, (s.cluster_ips, s.ports)) for s in after.services) if k in old
    } == old
    old_pods = {p.meta.key: (p.node_name, p.pod_ips) for p in before.pods}
    assert {p.meta.key: (p.node_name, p.pod_ips) for p in after.pods if p.meta.key in old_pods} == old_pods


def test_previous_snapshot_keeps_allocations_sticky() -> None:
    first = cluster_of(service("web", "type: NodePort, ports: [{port: 80}]"), pod("p"))
    moved = build_cluster(
        objects(service("web", "type: NodePort, ports: [{port: 80}]"), pod("p")),
        previous=Cluster(services=(replace(first.services[0], cluster_ips=("10.96.7.7",)),)),
    )
    assert moved.services[0].cluster_ips == ("10.96.7.7",)
    assert moved.services[0].ports[0].node_port == first.services[0].ports[0].node_port


def test_cluster_ips_come_from_the_service_cidr_and_avoid_the_dns_address() -> None:
    cluster = cluster_of(*(service(f"s{i}") for i in range(50)))
    network = ipaddress.ip_network("10.96.0.0/12")
    ips = [ipaddress.ip_address(s.cluster_ips[0]) for s in cluster.services]
    assert len(set(ips)) == 50
    assert all(ip in network and ip not in (network.network_address, network.broadcast_address) for ip in ips)
    assert ipaddress.ip_address("10.96.0.10") not in ips


def test_kube_dns_service_gets_the_dns_address() -> None:
    cluster = cluster_of(service("kube-dns", "ports: [{port: 53, protocol: UDP}]", namespace="kube-system"))
    assert cluster.services[0].cluster_ips == ("10.96.0.10",)


def test_configured_dns_address_is_given_to_kube_dns() -> None:
    config = "apiVersion: kubeplane.dev/v1alpha1\nkind: KubeplaneConfiguration\ndnsServiceIP: 10.96.0.53\n"
    cluster = cluster_of(config, service("kube-dns", "ports: [{port: 53}]", namespace="kube-system"))
    assert cluster.services[0].cluster_ips == ("10.96.0.53",)


def test_headless_and_external_name_services_get_no_cluster_ip() -> None:
    cluster = cluster_of(
        service("db", "clusterIP: None"), service("ext", "type: ExternalName, externalName: a.b")
    )
    assert [s.cluster_ips for s in cluster.services] == [(), ()]


def test_dual_stack_service_gets_one_address_per_family() -> None:
    cidr = "apiVersion: networking.k8s.io/v1\nkind: ServiceCIDR\nmetadata: {name: k}\n"
    cidr += "spec: {cidrs: [10.96.0.0/16, 'fd00:96::/112']}\n"
    cluster = cluster_of(
        cidr, service("dual", "ipFamilyPolicy: PreferDualStack, ports: [{port: 80}]"), service("one")
    )
    dual, one = cluster.services
    assert dual.ip_families == ("IPv4", "IPv6")
    assert ipaddress.ip_address(dual.cluster_ips[1]) in ipaddress.ip_network("fd00:96::/112")
    assert (one.ip_families, len(one.cluster_ips), one.ip_family_policy) == (("IPv4",), 1, "SingleStack")


def test_node_ports_are_allocated_in_range_for_node_port_and_load_balancer_services() -> None:
    cluster = cluster_of(
        service("np", "type: NodePort, ports: [{name: a, port: 80}, {name: b, port: 81, nodePort: 30001}]"),
        service("lb", "type: LoadBalancer, externalTrafficPolicy: Local, ports: [{port: 80}]"),
        service(
            "lb-no-ports", "type: LoadBalancer, allocateLoadBalancerNodePorts: false, ports: [{port: 80}]"
        ),
        service("plain"),
    )
    np, lb, bare, plain = (by_name(cluster, n) for n in ("np", "lb", "lb-no-ports", "plain"))
    assert 30000 <= (np.ports[0].node_port or 0) <= 32767 and np.ports[1].node_port == 30001
    assert 30000 <= (lb.ports[0].node_port or 0) <= 32767
    assert lb.health_check_node_port is not None and 30000 <= lb.health_check_node_port <= 32767
    assert bare.ports[0].node_port is None and bare.health_check_node_port is None
    assert plain.ports[0].node_port is None


def test_namespaces_used_by_objects_are_implied() -> None:
    cluster = cluster_of(service("web", namespace="shop"), pod("p", namespace="ops"))
    assert [n.meta.name for n in cluster.namespaces] == ["default", "kube-system", "ops", "shop"]


# --- cross-object errors: each one line naming file, document, object and field -----------------------


def test_duplicate_object_names_both_places() -> None:
    assert errors_of(service("web"), node("n") + "---\n" + service("web")) == [
        "f1.yaml#1 Service default/web: duplicate Service, also defined at f0.yaml#0"
    ]


def test_second_kube_proxy_configuration_is_refused() -> None:
    proxy = "apiVersion: kubeproxy.config.k8s.io/v1alpha1\nkind: KubeProxyConfiguration\n"
    assert errors_of(proxy, proxy) == [
        "f1.yaml#0 KubeProxyConfiguration kube-proxy: only one KubeProxyConfiguration may be given, "
        "also defined at f0.yaml#0"
    ]


def test_node_port_clash_names_both_services() -> None:
    (line,) = errors_of(
        service("a", "type: NodePort, ports: [{port: 80, nodePort: 30080}]"),
        service("b", "type: NodePort, ports: [{port: 81, nodePort: 30080}]"),
    )
    assert (
        line == "f1.yaml#0 Service default/b: spec.ports[0].nodePort: nodePort 30080 is already used by "
        "Service default/a (f0.yaml#0)"
    )


def test_duplicate_cluster_ip_names_both_services() -> None:
    (line,) = errors_of(
        service("a", "clusterIP: 10.96.1.1, ports: [{port: 80}]"),
        service("b", "clusterIP: 10.96.1.1, ports: [{port: 80}]"),
    )
    assert line == (
        "f1.yaml#0 Service default/b: spec.clusterIP: "
        "10.96.1.1 is already allocated to Service default/a (f0.yaml#0)"
    )


def test_cluster_ip_outside_every_service_cidr_is_refused() -> None:
    (line,) = errors_of(service("a", "clusterIP: 192.168.1.1, ports: [{port: 80}]"))
    assert (
        line == "f0.yaml#0 Service default/a: spec.clusterIP: 192.168.1.1 is outside every ServiceCIDR "
        "(10.96.0.0/12)"
    )


def test_dns_address_is_reserved_for_kube_dns() -> None:
    (line,) = errors_of(service("a", "clusterIP: 10.96.0.10, ports: [{port: 80}]"))
    assert (
        "spec.clusterIP: 10.96.0.10 is the cluster DNS address; only kube-system/kube-dns may use it" in line
    )


def test_require_dual_stack_without_an_ipv6_service_cidr_is_refused() -> None:
    (line,) = errors_of(service("a", "ipFamilyPolicy: RequireDualStack, ports: [{port: 80}]"))
    assert (
        line == "f0.yaml#0 Service default/a: spec.ipFamilyPolicy: "
        "RequireDualStack, but there is no IPv6 ServiceCIDR"
    )


def test_pod_on_unknown_node_is_refused() -> None:
    (line,) = errors_of(node("node-a"), pod("p", ", nodeName: node-z"))
    assert line == "f1.yaml#0 Pod default/p: spec.nodeName: node 'node-z' not found (nodes: node-a)"


def test_duplicate_pod_ip_names_both_pods() -> None:
    (line,) = errors_of(
        pod("a") + "status: {podIP: 10.244.1.9}\n", pod("b") + "status: {podIP: 10.244.1.9}\n"
    )
    assert line == "f1.yaml#0 Pod default/b: status.podIP: 10.244.1.9 is already Pod default/a's (f0.yaml#0)"


def test_two_nodes_with_one_internal_ip_are_refused() -> None:
    address = "status: {addresses: [{type: InternalIP, address: 198.51.100.9}]}"
    (line,) = errors_of(node("a", address), node("b", address))
    assert line == "f1.yaml#0 Node b: status.addresses: InternalIP 198.51.100.9 is also Node a's"


def test_legacy_endpoints_of_a_service_with_selector_are_not_mirrored() -> None:
    endpoints = textwrap.dedent("""
        apiVersion: v1
        kind: Endpoints
        metadata: {name: NAME}
        subsets: [{addresses: [{ip: 10.1.0.5}], ports: [{port: 80}]}]
    """)
    cluster = cluster_of(
        service("web", "selector: {app: web}, ports: [{port: 80}]"),
        endpoints.replace("NAME", "web"),
        service("ext"),
        endpoints.replace("NAME", "ext"),
    )
    assert [s.meta.name for s in cluster.endpoint_slices] == ["ext-legacy"]


def test_allocation_is_the_same_in_every_process() -> None:
    manifests = service("web", "type: NodePort, ports: [{port: 80}]") + "---\n" + pod("p")
    script = (
        "from kubeplane.model.complete import build_cluster\n"
        "from kubeplane.model.parse import parse_text\n"
        f"c = build_cluster(parse_text({manifests!r}, 'x').objects)\n"
        "print(c.services[0].cluster_ips, c.services[0].ports[0].node_port, c.pods[0].pod_ips)\n"
    )
    outputs = {
        subprocess.run(
            [sys.executable, "-c", script],
            env={**os.environ, "PYTHONHASHSEED": seed},
            cwd=Path(__file__).parents[2],
            capture_output=True,
            text=True,
            check=True,
            timeout=60,
        ).stdout
        for seed in ("1", "2")
    }
    assert len(outputs) == 1 and "10." in outputs.pop()
