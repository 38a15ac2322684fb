"""The resolv.conf and hosts files pods see, exactly as kubelet and the runtime write them."""

from __future__ import annotations

from dataclasses import replace

from kubeplane.model.objects import Cluster
from kubeplane.netns.demo_cluster import demo_node, demo_pod
from kubeplane.netns.etcfiles import (
    etc_netns_dirs,
    render_node_resolv_conf,
    render_pod_hosts,
    render_pod_resolv_conf,
)
from kubeplane.netns.plan import plan_lab


def test_pod_resolv_conf_has_the_cluster_first_search_list_nameserver_and_ndots() -> None:
    assert render_pod_resolv_conf("shop", "cluster.local", "10.96.0.10") == (
        "search shop.svc.cluster.local svc.cluster.local cluster.local\n"
        "nameserver 10.96.0.10\n"
        "options ndots:5\n"
    )


def test_node_resolv_conf_points_at_cluster_dns_without_pod_namespace() -> None:
    assert render_node_resolv_conf("corp.local", "10.100.0.10") == (
        "search svc.corp.local corp.local\nnameserver 10.100.0.10\n"
    )


def _pod_plan(**changes):
    pod = replace(demo_pod("web-0", 1, 5, namespace="shop"), **changes)
    return plan_lab("lab", Cluster(nodes=(demo_node(1),), pods=(pod,))).pods[0]


def test_hosts_file_is_kubelets_header_then_the_pod_ip_and_hostname() -> None:
    hosts = render_pod_hosts(_pod_plan(), "cluster.local").splitlines()
    assert hosts[0] == "# Kubernetes-managed hosts file."
    assert hosts[1] == "127.0.0.1\tlocalhost"
    assert hosts[-1] == "10.244.1.5\tweb-0"


def test_hosts_file_with_hostname_and_subdomain_lists_the_fqdn_first() -> None:
    hosts = render_pod_hosts(_pod_plan(hostname="db", subdomain="cache"), "cluster.local").splitlines()
    assert hosts[-1] == "10.244.1.5\tdb.cache.shop.svc.cluster.local\tdb"


def test_every_node_and_pod_namespace_gets_an_etc_directory_and_nothing_else() -> None:
    plan = plan_lab("lab", Cluster(nodes=(demo_node(1),), pods=(demo_pod("web-0", 1, 5, namespace="shop"),)))
    assert etc_netns_dirs(plan) == ("/etc/netns/kp-lab-node-node-1", "/etc/netns/kp-lab-shop-web-0")
