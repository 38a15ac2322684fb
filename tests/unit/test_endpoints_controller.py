"""The EndpointSlice controller derives what kube-controller-manager would publish, from dataclasses alone."""

from __future__ import annotations

from dataclasses import replace

from kubeplane.endpoints import (
    CONTROLLER_NAME,
    HEADLESS_LABEL,
    MANAGED_BY_LABEL,
    MAX_ENDPOINTS_PER_SLICE,
    derive_endpoint_slices,
    with_derived_endpoint_slices,
)
from kubeplane.model.objects import (
    SERVICE_NAME_LABEL,
    ZONE_LABEL,
    Cluster,
    Container,
    ContainerPort,
    EndpointConditions,
    EndpointPort,
    EndpointSlice,
    Node,
    ObjectMeta,
    ObjectReference,
    Pod,
    Service,
    ServicePort,
)

APP = {"app": "web"}


def make_pod(
    name: str,
    ip: str | tuple[str, ...],
    namespace: str = "shop",
    *,
    labels: dict[str, str] = APP,
    deletion_timestamp: str | None = None,
    node_name: str = "node-a",
    ready: bool | None = None,
    phase: str = "Running",
    hostname: str = "",
    subdomain: str = "",
    containers: tuple[Container, ...] = (),
) -> Pod:
    meta = ObjectMeta(
        name=name, namespace=namespace, labels=dict(labels), deletion_timestamp=deletion_timestamp
    )
    return Pod(
        meta=meta,
        node_name=node_name,
        pod_ips=(ip,) if isinstance(ip, str) else ip,
        ready=ready,
        phase=phase,
        hostname=hostname,
        subdomain=subdomain,
        containers=containers,
    )


def make_service(name: str = "web", namespace: str = "shop", **fields: object) -> Service:
    fields.setdefault("selector", dict(APP))
    fields.setdefault("ports", (ServicePort(port=80, name="http", target_port=8080),))
    fields.setdefault("cluster_ips", ("10.96.0.20",))
    return Service(meta=ObjectMeta(name=name, namespace=namespace), **fields)  # type: ignore[arg-type]


def derive(*objects: Service | Pod | Node) -> tuple[EndpointSlice, ...]:
    return derive_endpoint_slices(
        Cluster(
            services=tuple(o for o in objects if isinstance(o, Service)),
            pods=tuple(o for o in objects if isinstance(o, Pod)),
            nodes=tuple(o for o in objects if isinstance(o, Node)),
        )
    )


def conditions_by_pod(slices: tuple[EndpointSlice, ...]) -> dict[str, EndpointConditions]:
    return {e.target_ref.name: e.conditions for s in slices for e in s.endpoints if e.target_ref is not None}


def test_ready_running_pod_is_ready_serving_and_not_terminating() -> None:
    (slice_,) = derive(make_service(), make_pod("web-1", "10.244.1.5", ready=True))
    assert slice_.meta.namespace == "shop"
    assert slice_.address_type == "IPv4"
    assert slice_.ports == (EndpointPort(port=8080, protocol="TCP", name="http"),)
    (endpoint,) = slice_.endpoints
    assert endpoint.addresses == ("10.244.1.5",)
    assert endpoint.conditions == EndpointConditions(ready=True, serving=True, terminating=False)
    assert endpoint.target_ref == ObjectReference(kind="Pod", name="web-1", namespace="shop")


def test_unstated_readiness_follows_the_running_phase() -> None:
    slices = derive(
        make_service(),
        make_pod("running", "10.244.1.5"),
        make_pod("pending", "10.244.1.6", phase="Pending"),
    )
    conditions = conditions_by_pod(slices)
    assert conditions["running"].ready is True
    assert conditions["pending"] == EndpointConditions(ready=False, serving=False, terminating=False)


def test_not_ready_pod_is_listed_but_neither_ready_nor_serving() -> None:
    conditions = conditions_by_pod(derive(make_service(), make_pod("web-1", "10.244.1.5", ready=False)))
    assert conditions["web-1"] == EndpointConditions(ready=False, serving=False, terminating=False)


def test_terminating_ready_pod_is_serving_but_not_ready() -> None:
    pod = make_pod("web-1", "10.244.1.5", ready=True, deletion_timestamp="2026-01-01T00:00:00Z")
    conditions = conditions_by_pod(derive(make_service(), pod))
    assert conditions["web-1"] == EndpointConditions(ready=False, serving=True, terminating=True)


def test_terminating_unready_pod_is_neither_serving_nor_ready() -> None:
    pod = make_pod("web-1", "10.244.1.5", ready=False, deletion_timestamp="2026-01-01T00:00:00Z")
    conditions = conditions_by_pod(derive(make_service(), pod))
    assert conditions["web-1"] == EndpointConditions(ready=False, serving=False, terminating=True)


def test_publish_not_ready_addresses_marks_every_endpoint_ready_but_keeps_serving_truthful() -> None:
    service = make_service(publish_not_ready_addresses=True)
    terminating = make_pod("gone", "10.244.1.6", ready=True, deletion_timestamp="2026-01-01T00:00:00Z")
    conditions = conditions_by_pod(
        derive(service, make_pod("unready", "10.244.1.5", ready=False), terminating)
    )
    assert conditions["unready"] == EndpointConditions(ready=True, serving=False, terminating=False)
    assert conditions["gone"] == EndpointConditions(ready=True, serving=True, terminating=True)


def test_pods_without_ip_in_terminal_phase_elsewhere_or_unmatched_are_left_out() -> None:
    slices = derive(
        make_service(),
        make_pod("member", "10.244.1.5"),
        make_pod("no-ip", ()),
        make_pod("done", "10.244.1.6", phase="Succeeded"),
        make_pod("failed", "10.244.1.7", phase="Failed"),
        make_pod("other-ns", "10.244.1.8", namespace="default"),
        make_pod("other-app", "10.244.1.9", labels={"app": "db"}),
    )
    assert set(conditions_by_pod(slices)) == {"member"}


def test_selector_must_match_every_label() -> None:
    service = make_service(selector={"app": "web", "tier": "front"})
    slices = derive(
        service,
        make_pod("both", "10.244.1.5", labels={"app": "web", "tier": "front", "extra": "x"}),
        make_pod("one", "10.244.1.6", labels={"app": "web"}),
    )
    assert set(conditions_by_pod(slices)) == {"both"}


def test_named_target_port_resolves_per_pod_and_pods_without_it_get_a_slice_without_that_port() -> None:
    service = make_service(
        ports=(
            ServicePort(port=80, name="http", target_port="web"),
            ServicePort(port=9090, name="metrics", target_port=9100),
        )
    )
    web_8080 = Container(name="app", ports=(ContainerPort(container_port=8080, name="web"),))
    web_8081 = Container(name="app", ports=(ContainerPort(container_port=8081, name="web"),))
    udp_web = Container(name="app", ports=(ContainerPort(container_port=8080, name="web", protocol="UDP"),))
    slices = derive(
        service,
        make_pod("a", "10.244.1.5", containers=(web_8080,)),
        make_pod("b", "10.244.1.6", containers=(web_8080,)),
        make_pod("c", "10.244.1.7", containers=(web_8081,)),
        make_pod("d", "10.244.1.8", containers=(udp_web,)),
    )
    members_by_ports = {s.ports: {e.target_ref.name for e in s.endpoints if e.target_ref} for s in slices}
    metrics = EndpointPort(port=9100, name="metrics")
    assert members_by_ports == {
        (EndpointPort(port=8080, name="http"), metrics): {"a", "b"},
        (EndpointPort(port=8081, name="http"), metrics): {"c"},
        (metrics,): {"d"},
    }
    assert len({s.meta.name for s in slices}) == 3


def test_more_than_100_endpoints_split_into_two_deterministic_slices() -> None:
    pods = [make_pod(f"web-{i:03}", f"10.244.{1 + i // 200}.{1 + i % 200}") for i in range(150)]
    first = derive(make_service(), *pods)
    again = derive(make_service(), *reversed(pods))
    assert [len(s.endpoints) for s in first] == [MAX_ENDPOINTS_PER_SLICE, 50]
    assert first == again
    names = [s.meta.name for s in first]
    assert len(set(names)) == 2
    assert all(name.startswith("web-") for name in names)
    all_addresses = [a for s in first for e in s.endpoints for a in e.addresses]
    assert sorted(all_addresses) == sorted(p.pod_ips[0] for p in pods)


def test_hostname_is_set_only_when_subdomain_names_the_service() -> None:
    service = make_service(name="db", headless=True, cluster_ips=(), selector={"app": "db"})
    labels = {"app": "db"}
    slices = derive(
        service,
        make_pod("db-0", "10.244.1.5", labels=labels, hostname="db-0", subdomain="db"),
        make_pod("db-1", "10.244.1.6", labels=labels, hostname="db-1", subdomain="other"),
        make_pod("db-2", "10.244.1.7", labels=labels, subdomain="db"),
    )
    hostnames = {e.target_ref.name: e.hostname for s in slices for e in s.endpoints if e.target_ref}
    assert hostnames == {"db-0": "db-0", "db-1": None, "db-2": None}
    assert slices[0].meta.labels[HEADLESS_LABEL] == ""


def test_node_name_and_zone_come_from_the_pod_and_its_node() -> None:
    zoned = Node(meta=ObjectMeta(name="node-a", labels={ZONE_LABEL: "zone-a"}))
    unzoned = Node(meta=ObjectMeta(name="node-b"))
    slices = derive(
        make_service(),
        zoned,
        unzoned,
        make_pod("on-a", "10.244.1.5", node_name="node-a"),
        make_pod("on-b", "10.244.2.5", node_name="node-b"),
    )
    placement = {
        e.target_ref.name: (e.node_name, e.zone) for s in slices for e in s.endpoints if e.target_ref
    }
    assert placement == {"on-a": ("node-a", "zone-a"), "on-b": ("node-b", None)}


def test_dual_stack_service_gets_one_slice_family_per_address_type() -> None:
    service = make_service(ip_families=("IPv4", "IPv6"), cluster_ips=("10.96.0.20", "fd00:96::20"))
    slices = derive(service, make_pod("web-1", ("10.244.1.5", "fd00:244:1::5")))
    by_type = {s.address_type: s.endpoints[0].addresses for s in slices}
    assert by_type == {"IPv4": ("10.244.1.5",), "IPv6": ("fd00:244:1::5",)}


def test_single_stack_service_ignores_the_other_family_of_a_dual_stack_pod() -> None:
    slices = derive(make_service(), make_pod("web-1", ("10.244.1.5", "fd00:244:1::5")))
    assert [(s.address_type, s.endpoints[0].addresses) for s in slices] == [("IPv4", ("10.244.1.5",))]


def test_slices_carry_the_service_name_and_manager_labels_and_the_service_labels() -> None:
    service = Service(
        meta=ObjectMeta(name="web", namespace="shop", labels={"team": "a"}),
        selector=dict(APP),
        cluster_ips=("10.96.0.20",),
        ports=(ServicePort(port=80),),
    )
    (slice_,) = derive(service, make_pod("web-1", "10.244.1.5"))
    assert slice_.meta.labels == {
        "team": "a",
        SERVICE_NAME_LABEL: "web",
        MANAGED_BY_LABEL: CONTROLLER_NAME,
    }
    assert slice_.service_name == "web"
    assert slice_.ports == (EndpointPort(port=80),)


def test_selector_service_without_matching_pods_owns_an_empty_placeholder_slice() -> None:
    (slice_,) = derive(make_service())
    assert slice_.endpoints == ()
    assert slice_.ports == ()
    assert slice_.service_name == "web"


def test_service_without_selector_derives_nothing() -> None:
    assert derive(make_service(selector=None), make_pod("web-1", "10.244.1.5")) == ()
    assert derive(make_service(selector={}), make_pod("web-1", "10.244.1.5")) == ()


def test_external_name_service_derives_nothing() -> None:
    service = make_service(type="ExternalName", external_name="db.example.com", cluster_ips=(), ports=())
    assert derive(service, make_pod("web-1", "10.244.1.5")) == ()


def test_slice_names_are_stable_when_endpoints_change() -> None:
    before = derive(make_service(), make_pod("web-1", "10.244.1.5"))
    after = derive(make_service(), make_pod("web-1", "10.244.1.5"), make_pod("web-2", "10.244.1.6"))
    assert [s.meta.name for s in before] == [s.meta.name for s in after]


def test_rederiving_replaces_the_controllers_slices_and_keeps_explicit_ones() -> None:
    explicit = EndpointSlice(
        meta=ObjectMeta(name="legacy-1", namespace="shop", labels={SERVICE_NAME_LABEL: "legacy"}),
        endpoints=(),
    )
    legacy = make_service(name="legacy", selector=None)
    cluster = Cluster(
        services=(make_service(), legacy),
        pods=(make_pod("web-1", "10.244.1.5", ready=True),),
        endpoint_slices=(explicit,),
    )
    derived_once = with_derived_endpoint_slices(cluster)
    assert with_derived_endpoint_slices(derived_once) == derived_once

    not_ready = replace(derived_once, pods=(make_pod("web-1", "10.244.1.5", ready=False),))
    rederived = with_derived_endpoint_slices(not_ready)
    assert rederived.endpoint_slices[0] == explicit
    (web_slice,) = rederived.endpoint_slices[1:]
    assert web_slice.endpoints[0].conditions.ready is False
