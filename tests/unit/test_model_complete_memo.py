"""A FamilyMemo kept across builds gives the same completed cluster as building without it."""

from __future__ import annotations

import pytest

from kubeplane.model.complete import build_cluster
from kubeplane.model.complete_services import FamilyMemo
from kubeplane.model.errors import ManifestErrors
from kubeplane.model.objects import KubeObject, ObjectMeta, Service, ServiceCIDR, ServicePort


def _service(name: str, policy: str | None = None, families: tuple[str, ...] = ()) -> Service:
    return Service(
        meta=ObjectMeta(name=name, namespace="shop"),
        ports=(ServicePort(port=80),),
        ip_family_policy=policy,  # type: ignore[arg-type]
        ip_families=families,  # type: ignore[arg-type]
    )


WEB, DB = _service("web"), _service("db", "PreferDualStack")
V4 = ServiceCIDR(ObjectMeta(name="kubernetes"), ("10.96.0.0/12",))
DUAL = ServiceCIDR(ObjectMeta(name="kubernetes"), ("10.96.0.0/12", "fd00:10:96::/112"))


def _services(objects: list[KubeObject], memo: FamilyMemo | None) -> dict[str, Service]:
    return {svc.meta.name: svc for svc in build_cluster(objects, memo=memo).services}


def test_memo_gives_the_same_cluster_and_reuses_completed_services() -> None:
    fixed = Service(
        meta=ObjectMeta(name="fixed", namespace="shop"),
        ports=(ServicePort(port=80),),
        cluster_ips=("10.96.0.50",),
    )
    memo = FamilyMemo()
    first = build_cluster([WEB, DB, fixed, V4], memo=memo)
    second = build_cluster([WEB, DB, fixed, V4], previous=first, memo=memo)
    assert first == build_cluster([WEB, DB, fixed, V4]) == second
    assert second.services[1].meta.name == "fixed" and second.services[1] is first.services[1]
    assert build_cluster([WEB, DB, fixed, V4]).services[1] is not first.services[1]


def test_a_new_instance_of_a_service_is_completed_again() -> None:
    memo = FamilyMemo()
    _services([WEB, DB, V4], memo)
    changed = _service("web", "RequireDualStack")
    with pytest.raises(ManifestErrors, match="RequireDualStack"):
        _services([changed, DB, V4], memo)


def test_changed_service_cidr_families_forget_what_was_filled_in() -> None:
    memo = FamilyMemo()
    assert _services([DB, V4], memo)["db"].ip_families == ("IPv4",)
    assert _services([DB, DUAL], memo)["db"].ip_families == ("IPv4", "IPv6")


def test_a_service_with_errors_is_reported_on_every_build() -> None:
    memo = FamilyMemo()
    v6_only = _service("v6", families=("IPv6",))
    for _ in range(2):
        with pytest.raises(ManifestErrors, match="no IPv6 ServiceCIDR"):
            build_cluster([v6_only, V4], memo=memo)
