"""Record kinds and rcode rules of the cluster zone (Kubernetes DNS spec 1.1.0, CoreDNS kubernetes plugin)."""

from __future__ import annotations

import pytest

from kubeplane.dns.lookup import NOERROR, NXDOMAIN, Answer, lookup
from kubeplane.dns.records import Address, RecordType, Soa, Srv, Target, Text
from kubeplane.dns.zone import Zone, build_zone, dns_service_ips
from kubeplane.model.objects import (
    SERVICE_NAME_LABEL,
    Cluster,
    Endpoint,
    EndpointConditions,
    EndpointPort,
    EndpointSlice,
    KubeplaneConfiguration,
    Namespace,
    ObjectMeta,
    Pod,
    Service,
    ServiceCIDR,
    ServicePort,
)

A, AAAA, SRV, PTR, TXT, NS, SOA, CNAME, MX = 1, 28, 33, 12, 16, 2, 6, 5, 15


def service(name: str, namespace: str = "shop", **fields: object) -> Service:
    return Service(ObjectMeta(name, namespace), **fields)  # type: ignore[arg-type]


def endpoint_slice(
    service_name: str,
    endpoints: tuple[Endpoint, ...],
    ports: tuple[EndpointPort, ...] = (EndpointPort(8080, name="http"),),
    namespace: str = "shop",
    address_type: str = "IPv4",
) -> EndpointSlice:
    meta = ObjectMeta(f"{service_name}-abc", namespace, labels={SERVICE_NAME_LABEL: service_name})
    return EndpointSlice(meta, address_type=address_type, endpoints=endpoints, ports=ports)  # type: ignore[arg-type]


WEB = service("web", cluster_ips=("10.96.0.20",), ports=(ServicePort(80, name="http", target_port=8080),))
WEB_SLICE = endpoint_slice("web", (Endpoint(("10.244.1.5",)), Endpoint(("10.244.2.6",))))
DB = service("db", headless=True, ports=(ServicePort(5432, name="pg"),))
DB_SLICE = endpoint_slice(
    "db",
    (
        Endpoint(("10.244.1.7",), hostname="db-0"),
        Endpoint(("10.244.2.8",)),
        Endpoint(("10.244.2.9",), conditions=EndpointConditions(ready=False)),
    ),
    ports=(EndpointPort(5432, name="pg"),),
)


def zone_of(*objects: object, **config: object) -> Zone:
    services = tuple(o for o in objects if isinstance(o, Service))
    slices = tuple(o for o in objects if isinstance(o, EndpointSlice))
    pods = tuple(o for o in objects if isinstance(o, Pod))
    namespaces = tuple(o for o in objects if isinstance(o, Namespace))
    cidrs = tuple(o for o in objects if isinstance(o, ServiceCIDR))
    cluster = Cluster(
        services=services,
        endpoint_slices=slices,
        pods=pods,
        namespaces=namespaces,
        service_cidrs=cidrs,
        kubeplane_config=KubeplaneConfiguration(**config),  # type: ignore[arg-type]
    )
    return build_zone(cluster, serial=42)


def ask(zone: Zone, name: str, qtype: int) -> Answer:
    answer = lookup(zone, name, qtype)
    assert answer is not None, f"{name} unexpectedly outside the zone"
    return answer


def data_of(answer: Answer) -> list[object]:
    return [named.record.data for named in answer.answer]


def assert_negative(answer: Answer, rcode: int, origin: str = "cluster.local.") -> None:
    assert answer.rcode == rcode
    assert answer.answer == ()
    assert [(n.name, n.record.rtype) for n in answer.authority] == [(origin, RecordType.SOA)]


# --- ClusterIP services -----------------------------------------------------------------------------------


def test_clusterip_service_has_a_record_for_its_cluster_ip() -> None:
    answer = ask(zone_of(WEB), "web.shop.svc.cluster.local.", A)
    assert answer.rcode == NOERROR
    assert data_of(answer) == [Address("10.96.0.20")]
    assert answer.answer[0].record.ttl == 5


def test_dual_stack_service_has_a_and_aaaa() -> None:
    web = service("web", cluster_ips=("10.96.0.20", "fd00:96::20"), ports=(ServicePort(80),))
    zone = zone_of(web)
    assert data_of(ask(zone, "web.shop.svc.cluster.local.", A)) == [Address("10.96.0.20")]
    assert data_of(ask(zone, "web.shop.svc.cluster.local.", AAAA)) == [Address("fd00:96::20")]


def test_ipv4_only_service_answers_aaaa_with_nodata() -> None:
    assert_negative(ask(zone_of(WEB), "web.shop.svc.cluster.local.", AAAA), NOERROR)


def test_clusterip_service_without_ports_does_not_exist() -> None:
    bare = service("bare", cluster_ips=("10.96.0.30",))
    assert_negative(ask(zone_of(bare), "bare.shop.svc.cluster.local.", A), NXDOMAIN)


def test_named_port_srv_targets_the_service_name() -> None:
    answer = ask(zone_of(WEB), "_http._tcp.web.shop.svc.cluster.local.", SRV)
    assert data_of(answer) == [Srv(0, 100, 80, "web.shop.svc.cluster.local.")]
    assert [(n.name, n.record.data) for n in answer.additional] == [
        ("web.shop.svc.cluster.local.", Address("10.96.0.20"))
    ]


def test_srv_on_service_name_lists_every_port_with_equal_weights() -> None:
    web = service("web", cluster_ips=("10.96.0.20",), ports=(ServicePort(80, name="http"), ServicePort(443)))
    answer = ask(zone_of(web), "web.shop.svc.cluster.local.", SRV)
    target = "web.shop.svc.cluster.local."
    assert data_of(answer) == [Srv(0, 50, 80, target), Srv(0, 50, 443, target)]


def test_srv_with_wrong_protocol_does_not_exist() -> None:
    assert_negative(ask(zone_of(WEB), "_http._udp.web.shop.svc.cluster.local.", SRV), NXDOMAIN)


def test_a_query_on_port_name_returns_service_address_as_coredns_does() -> None:
    assert data_of(ask(zone_of(WEB), "_http._tcp.web.shop.svc.cluster.local.", A)) == [Address("10.96.0.20")]


def test_clusterip_service_endpoints_are_named_by_their_dashed_address() -> None:
    zone = zone_of(WEB, WEB_SLICE)
    assert data_of(ask(zone, "10-244-1-5.web.shop.svc.cluster.local.", A)) == [Address("10.244.1.5")]


# --- headless services ------------------------------------------------------------------------------------


def test_headless_service_returns_every_ready_endpoint() -> None:
    answer = ask(zone_of(DB, DB_SLICE), "db.shop.svc.cluster.local.", A)
    assert data_of(answer) == [Address("10.244.1.7"), Address("10.244.2.8")]


def test_headless_service_with_publish_not_ready_returns_not_ready_endpoints() -> None:
    db = service("db", headless=True, publish_not_ready_addresses=True)
    answer = ask(zone_of(db, DB_SLICE), "db.shop.svc.cluster.local.", A)
    assert Address("10.244.2.9") in data_of(answer)


def test_headless_service_without_endpoints_does_not_exist() -> None:
    assert_negative(ask(zone_of(DB), "db.shop.svc.cluster.local.", A), NXDOMAIN)


def test_headless_endpoint_with_hostname_has_its_own_name() -> None:
    zone = zone_of(DB, DB_SLICE)
    assert data_of(ask(zone, "db-0.db.shop.svc.cluster.local.", A)) == [Address("10.244.1.7")]
    assert_negative(ask(zone, "10-244-1-7.db.shop.svc.cluster.local.", A), NXDOMAIN)


def test_headless_endpoint_without_hostname_is_named_from_its_address() -> None:
    zone = zone_of(DB, DB_SLICE)
    assert data_of(ask(zone, "10-244-2-8.db.shop.svc.cluster.local.", A)) == [Address("10.244.2.8")]


def test_ipv6_endpoint_label_replaces_colons_with_dashes() -> None:
    db = service("db6", headless=True, ip_families=("IPv6",))
    slice6 = endpoint_slice("db6", (Endpoint(("fd00:10::5",)),), address_type="IPv6")
    zone = zone_of(db, slice6)
    assert data_of(ask(zone, "fd00-10--5.db6.shop.svc.cluster.local.", AAAA)) == [Address("fd00:10::5")]


def test_headless_srv_has_one_record_per_endpoint_targeting_its_name() -> None:
    answer = ask(zone_of(DB, DB_SLICE), "_pg._tcp.db.shop.svc.cluster.local.", SRV)
    assert data_of(answer) == [
        Srv(0, 50, 5432, "db-0.db.shop.svc.cluster.local."),
        Srv(0, 50, 5432, "10-244-2-8.db.shop.svc.cluster.local."),
    ]
    assert {n.name for n in answer.additional} == {
        "db-0.db.shop.svc.cluster.local.",
        "10-244-2-8.db.shop.svc.cluster.local.",
    }


def test_srv_weight_is_at_least_one_with_many_endpoints() -> None:
    endpoints = tuple(Endpoint((f"10.244.3.{i}",)) for i in range(1, 151))
    answer = ask(zone_of(DB, endpoint_slice("db", endpoints)), "db.shop.svc.cluster.local.", SRV)
    assert len(answer.answer) == 150
    assert {d.weight for d in data_of(answer) if isinstance(d, Srv)} == {1}


# --- ExternalName -----------------------------------------------------------------------------------------


def test_externalname_service_is_a_cname_to_the_external_name() -> None:
    ext = service("ext", type="ExternalName", external_name="Example.COM")
    answer = ask(zone_of(ext), "ext.shop.svc.cluster.local.", A)
    assert data_of(answer) == [Target("example.com.")]
    assert answer.answer[0].record.rtype is RecordType.CNAME
    assert answer.chase == "example.com."


def test_externalname_pointing_into_the_cluster_is_followed_in_the_zone() -> None:
    ext = service("alias", type="ExternalName", external_name="web.shop.svc.cluster.local")
    answer = ask(zone_of(ext, WEB), "alias.shop.svc.cluster.local.", A)
    assert data_of(answer) == [Target("web.shop.svc.cluster.local."), Address("10.96.0.20")]
    assert answer.answer[1].name == "web.shop.svc.cluster.local."
    assert answer.chase is None


def test_externalname_with_an_ip_does_not_exist() -> None:
    ext = service("ip", type="ExternalName", external_name="192.0.2.1")
    assert_negative(ask(zone_of(ext), "ip.shop.svc.cluster.local.", A), NXDOMAIN)


# --- PTR --------------------------------------------------------------------------------------------------


def test_ptr_of_service_ip_names_the_service() -> None:
    answer = ask(zone_of(WEB, WEB_SLICE), "20.0.96.10.in-addr.arpa.", PTR)
    assert data_of(answer) == [Target("web.shop.svc.cluster.local.")]


def test_ptr_of_ipv6_service_ip() -> None:
    web = service("web", cluster_ips=("fd00:96::20",), ip_families=("IPv6",), ports=(ServicePort(80),))
    name = "0.2.0.0." + "0.0.0.0." * 5 + "6.9.0.0.0.0.d.f.ip6.arpa."
    assert data_of(ask(zone_of(web), name, PTR)) == [Target("web.shop.svc.cluster.local.")]


def test_ptr_of_endpoint_ip_names_the_endpoint() -> None:
    zone = zone_of(DB, DB_SLICE, WEB, WEB_SLICE)
    assert data_of(ask(zone, "7.1.244.10.in-addr.arpa.", PTR)) == [Target("db-0.db.shop.svc.cluster.local.")]
    assert data_of(ask(zone, "5.1.244.10.in-addr.arpa.", PTR)) == [
        Target("10-244-1-5.web.shop.svc.cluster.local.")
    ]


def test_ptr_of_pod_backing_two_services_names_both() -> None:
    other = service("web2", cluster_ips=("10.96.0.21",), ports=(ServicePort(80),))
    zone = zone_of(WEB, WEB_SLICE, other, endpoint_slice("web2", (Endpoint(("10.244.1.5",)),)))
    assert data_of(ask(zone, "5.1.244.10.in-addr.arpa.", PTR)) == [
        Target("10-244-1-5.web.shop.svc.cluster.local."),
        Target("10-244-1-5.web2.shop.svc.cluster.local."),
    ]


def test_reverse_name_the_zone_does_not_hold_is_forwarded() -> None:
    assert lookup(zone_of(WEB), "99.0.96.10.in-addr.arpa.", PTR) is None


# --- pods -------------------------------------------------------------------------------------------------


def test_insecure_pod_name_resolves_any_address() -> None:
    zone = zone_of(WEB)
    assert data_of(ask(zone, "10-244-9-9.shop.pod.cluster.local.", A)) == [Address("10.244.9.9")]


def test_insecure_ipv6_pod_name() -> None:
    assert data_of(ask(zone_of(WEB), "fd00-10--7.shop.pod.cluster.local.", AAAA)) == [Address("fd00:10::7")]


def test_pod_name_in_missing_namespace_does_not_exist() -> None:
    assert_negative(ask(zone_of(WEB), "10-244-9-9.nope.pod.cluster.local.", A), NXDOMAIN)


def test_pod_label_that_is_not_an_address_does_not_exist() -> None:
    assert_negative(ask(zone_of(WEB), "web-1.shop.pod.cluster.local.", A), NXDOMAIN)


def test_verified_pod_name_needs_a_pod_with_that_address_in_that_namespace() -> None:
    pod = Pod(ObjectMeta("api", "shop"), pod_ips=("10.244.1.5",))
    zone = zone_of(pod, dns_pods_mode="verified")
    assert data_of(ask(zone, "10-244-1-5.shop.pod.cluster.local.", A)) == [Address("10.244.1.5")]
    assert_negative(ask(zone, "10-244-9-9.shop.pod.cluster.local.", A), NXDOMAIN)
    assert_negative(ask(zone, "10-244-1-5.default.pod.cluster.local.", A), NXDOMAIN)


def test_disabled_pod_names_do_not_exist() -> None:
    zone = zone_of(WEB, dns_pods_mode="disabled")
    assert_negative(ask(zone, "10-244-9-9.shop.pod.cluster.local.", A), NXDOMAIN)
    assert_negative(ask(zone, "shop.pod.cluster.local.", A), NXDOMAIN)


def test_pod_address_of_other_family_is_nodata() -> None:
    assert_negative(ask(zone_of(WEB), "10-244-9-9.shop.pod.cluster.local.", AAAA), NOERROR)


# --- zone apex, version, structure ------------------------------------------------------------------------


def test_dns_version_txt_is_schema_1_1_0() -> None:
    answer = ask(zone_of(), "dns-version.cluster.local.", TXT)
    assert data_of(answer) == [Text("1.1.0")]
    assert answer.answer[0].record.ttl == 28800


def test_apex_ns_is_ns_dns_with_the_dns_service_address() -> None:
    answer = ask(zone_of(), "cluster.local.", NS)
    assert data_of(answer) == [Target("ns.dns.cluster.local.")]
    assert [(n.name, n.record.data) for n in answer.additional] == [
        ("ns.dns.cluster.local.", Address("10.96.0.10"))
    ]


def test_apex_soa_matches_coredns() -> None:
    answer = ask(zone_of(), "cluster.local.", SOA)
    assert data_of(answer) == [
        Soa("ns.dns.cluster.local.", "hostmaster.cluster.local.", 42, 7200, 1800, 86400, 5)
    ]


def test_existing_namespace_is_nodata_and_missing_namespace_nxdomain() -> None:
    zone = zone_of(WEB)
    assert_negative(ask(zone, "shop.svc.cluster.local.", A), NOERROR)
    assert_negative(ask(zone, "web.nope.svc.cluster.local.", A), NXDOMAIN)
    assert_negative(ask(zone, "nope.svc.cluster.local.", A), NXDOMAIN)


def test_declared_empty_namespace_exists() -> None:
    zone = zone_of(Namespace(ObjectMeta("quiet")))
    assert_negative(ask(zone, "quiet.svc.cluster.local.", A), NOERROR)


def test_svc_and_pod_labels_under_the_apex_are_nodata() -> None:
    zone = zone_of()
    assert_negative(ask(zone, "svc.cluster.local.", A), NOERROR)
    assert_negative(ask(zone, "pod.cluster.local.", A), NOERROR)


def test_unknown_service_and_search_path_expansion_are_nxdomain() -> None:
    zone = zone_of(WEB)
    assert_negative(ask(zone, "nope.shop.svc.cluster.local.", A), NXDOMAIN)
    assert_negative(ask(zone, "web.shop.svc.cluster.local.shop.svc.cluster.local.", A), NXDOMAIN)
    assert_negative(ask(zone, "www.example.com.cluster.local.", A), NXDOMAIN)


def test_existing_name_with_other_type_is_nodata() -> None:
    assert_negative(ask(zone_of(WEB), "web.shop.svc.cluster.local.", MX), NOERROR)
    assert_negative(ask(zone_of(), "dns-version.cluster.local.", A), NOERROR)


@pytest.mark.parametrize(
    "name", ["*.shop.svc.cluster.local.", "any.shop.svc.cluster.local.", "web.*.svc.cluster.local."]
)
def test_wildcard_labels_find_nothing_as_in_coredns_1_9(name: str) -> None:
    assert_negative(ask(zone_of(WEB), name, A), NXDOMAIN)


def test_names_are_case_insensitive_and_answers_echo_the_question() -> None:
    answer = ask(zone_of(WEB), "Web.SHOP.svc.Cluster.Local.", A)
    assert data_of(answer) == [Address("10.96.0.20")]
    assert answer.answer[0].name == "Web.SHOP.svc.Cluster.Local."


def test_names_outside_the_domain_are_not_ours() -> None:
    assert lookup(zone_of(WEB), "example.com.", A) is None
    assert lookup(zone_of(WEB), "notcluster.local.", A) is None


def test_cluster_domain_and_ttl_come_from_config() -> None:
    zone = zone_of(WEB, cluster_domain="Corp.Example", dns_ttl=30)
    answer = ask(zone, "web.shop.svc.corp.example.", A)
    assert answer.answer[0].record.ttl == 30
    assert lookup(zone, "web.shop.svc.cluster.local.", A) is None
    assert_negative(ask(zone, "nope.shop.svc.corp.example.", A), NXDOMAIN, origin="corp.example.")


def test_dns_service_ip_is_configured_or_tenth_address_of_service_cidr() -> None:
    assert dns_service_ips(Cluster()) == ("10.96.0.10",)
    cidr = ServiceCIDR(ObjectMeta("kubernetes"), ("10.100.0.0/16",))
    assert dns_service_ips(Cluster(service_cidrs=(cidr,))) == ("10.100.0.10",)
    configured = KubeplaneConfiguration(dns_service_ip="10.96.0.53")
    assert dns_service_ips(Cluster(kubeplane_config=configured)) == ("10.96.0.53",)
