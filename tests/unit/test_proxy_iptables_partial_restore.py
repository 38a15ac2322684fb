"""A partial sync renders only changed ports and leaves unchanged shared chains and filter rules out."""

from __future__ import annotations

from dataclasses import replace

from proxy_builders import make_cluster, make_endpoint, make_service, make_slice

from kubeplane.model.objects import Cluster
from kubeplane.proxy.iptables.partial import PartialRestore, PortIdentity, changed_ports, partial_restore
from kubeplane.proxy.iptables.render import node_context, render_iptables
from kubeplane.proxy.plan import NodePlan, PlanCache, plan_node

SHARED_NAT = ("-A KUBE-SERVICES", "-A KUBE-NODEPORTS", "-A KUBE-POSTROUTING", "-A KUBE-MARK-MASQ")


def _cluster(endpoints: dict[str, tuple[str, ...]]) -> Cluster:
    names = sorted(endpoints)
    services = tuple(make_service(name, f"10.96.0.{10 + i}") for i, name in enumerate(names))
    slices = tuple(
        make_slice(name, tuple(make_endpoint(ip, "node-a") for ip in endpoints[name])) for name in names
    )
    return make_cluster(services, slices)


def _partial(before: NodePlan, after: NodePlan, previous: PartialRestore | None) -> PartialRestore:
    """What a partial sync from `before` (fully synced, or partially with `previous`) to `after` writes."""
    active = previous.active_nat_chains if previous else render_iptables(before, "IPv4").active_nat_chains
    return partial_restore(
        after.service_ports,
        changed_ports(before.service_ports, after.service_ports),
        node_context(after, "IPv4"),
        render_iptables(replace(after, service_ports=()), "IPv4"),
        previous,
        active,
    )


def _rules(text: str) -> list[str]:
    return [line for line in text.splitlines() if line.startswith("-A ")]


BEFORE = plan_node(_cluster({"a": ("10.244.1.1",), "b": ("10.244.1.2",)}), "node-a")
SWAPPED = plan_node(_cluster({"a": ("10.244.1.1",), "b": ("10.244.1.3",)}), "node-a")
GROWN = plan_node(_cluster({"a": ("10.244.1.1",), "b": ("10.244.1.3",), "c": ("10.244.1.4",)}), "node-a")
B: PortIdentity = ("ns1/b:p80", "TCP", "IPv4")
B_CHANGED = {B}


def test_first_partial_after_a_full_sync_writes_what_kube_proxy_writes() -> None:
    restore = _partial(BEFORE, SWAPPED, None)
    expected = render_iptables(SWAPPED, "IPv4", changed=B_CHANGED)
    assert _rules(restore.text) == _rules(expected.restore_text("filter") + expected.restore_text("nat"))
    assert restore.active_nat_chains == render_iptables(SWAPPED, "IPv4").active_nat_chains


def test_endpoint_swap_after_a_partial_sync_writes_only_that_ports_own_chains() -> None:
    first = _partial(BEFORE, SWAPPED, None)
    restore = _partial(SWAPPED, BEFORE, first)
    own = [
        r
        for r in _rules(render_iptables(BEFORE, "IPv4", changed=B_CHANGED).restore_text("nat"))
        if not r.startswith(SHARED_NAT)
    ]
    assert _rules(restore.text) == own
    assert "*filter" not in restore.text and ":KUBE-SERVICES" not in restore.text
    (stale,) = restore.stale_chains
    assert f":{stale} - [0:0]" in restore.text and restore.text.endswith(f"-X {stale}\nCOMMIT\n")
    assert restore.active_nat_chains == render_iptables(BEFORE, "IPv4").active_nat_chains


def test_unchanged_ports_are_not_rendered_again() -> None:
    cache = PlanCache()
    swapped = plan_node(_cluster({"a": ("10.244.1.1",), "b": ("10.244.1.3",)}), "node-a", cache)
    grown = plan_node(
        _cluster({"a": ("10.244.1.1",), "b": ("10.244.1.3",), "c": ("10.244.1.4",)}), "node-a", cache
    )
    first = _partial(BEFORE, swapped, None)
    restore = _partial(swapped, grown, first)
    a: PortIdentity = ("ns1/a:p80", "TCP", "IPv4")
    c: PortIdentity = ("ns1/c:p80", "TCP", "IPv4")
    assert restore.port_lines[a] is first.port_lines[a]
    assert restore.port_lines[c].port is grown.service_ports[-1]


def test_a_new_service_inserts_its_dispatch_rule_instead_of_rewriting_the_chain() -> None:
    first = _partial(BEFORE, SWAPPED, None)
    restore = _partial(SWAPPED, GROWN, first)
    (rule,) = [
        r
        for r in _rules(render_iptables(GROWN, "IPv4").nat)
        if r.startswith("-A KUBE-SERVICES") and "ns1/c:p80" in r
    ]
    assert restore.text.startswith("*nat\n")  # no filter table
    assert f"-I KUBE-SERVICES 1 {rule.removeprefix('-A KUBE-SERVICES ')}" in restore.text
    assert ":KUBE-SERVICES" not in restore.text and "-A KUBE-SERVICES" not in restore.text
    assert restore.text.index(":KUBE-SVC-") < restore.text.index("-I KUBE-SERVICES")


def test_a_service_losing_its_endpoints_swaps_its_dispatch_rule_for_a_filter_reject() -> None:
    first = _partial(BEFORE, SWAPPED, None)
    emptied = plan_node(_cluster({"a": ("10.244.1.1",), "b": ()}), "node-a")
    restore = _partial(SWAPPED, emptied, first)
    filter_part, nat_part = restore.text.split("*nat\n")
    assert filter_part.startswith("*filter\n-I KUBE-SERVICES 1 ") and "REJECT" in filter_part
    assert "-D KUBE-SERVICES " in nat_part and "ns1/b:p80 cluster IP" in nat_part


def test_a_removed_service_loses_its_dispatch_rule_before_its_chains_are_deleted() -> None:
    first = _partial(BEFORE, GROWN, None)
    restore = _partial(GROWN, SWAPPED, first)
    gone = (
        render_iptables(GROWN, "IPv4").active_nat_chains - render_iptables(SWAPPED, "IPv4").active_nat_chains
    )
    assert restore.stale_chains == gone and gone
    assert restore.text.index("-D KUBE-SERVICES") < min(restore.text.index(f"-X {c}") for c in gone)


def test_changed_node_wide_rules_rewrite_the_shared_chains_whole() -> None:
    first = _partial(BEFORE, SWAPPED, None)
    moved = replace(GROWN, node_port_addresses=("198.51.100.0/24",))
    restore = _partial(SWAPPED, moved, first)
    assert ":KUBE-SERVICES - [0:0]" in restore.text and "-I KUBE-SERVICES" not in restore.text
    assert _rules(restore.text)[-1].endswith("-j KUBE-NODEPORTS")


def test_a_port_rule_in_an_ordered_chain_is_never_edited_in_place() -> None:
    first = _partial(BEFORE, SWAPPED, None)
    (identity,) = [i for i in first.port_lines if i == B]
    odd = replace(first.port_lines[identity], nat_rules=("-A KUBE-POSTROUTING -j RETURN",))
    tampered = replace(first, port_lines={**first.port_lines, identity: odd})
    restore = _partial(SWAPPED, BEFORE, tampered)
    assert ":KUBE-SERVICES - [0:0]" in restore.text and "-D KUBE-POSTROUTING" not in restore.text


def test_nothing_changed_means_no_restore_at_all() -> None:
    first = _partial(BEFORE, SWAPPED, None)
    assert _partial(SWAPPED, SWAPPED, first).text == ""


def test_changed_ports_lists_new_and_different_ports_only() -> None:
    cache = PlanCache()
    before = plan_node(_cluster({"a": ("10.244.1.1",), "b": ("10.244.1.2",)}), "node-a", cache)
    after = plan_node(_cluster({"a": ("10.244.1.1",), "c": ("10.244.1.2",)}), "node-a", cache)
    assert changed_ports(before.service_ports, after.service_ports) == {("ns1/c:p80", "TCP", "IPv4")}
    assert changed_ports(BEFORE.service_ports, SWAPPED.service_ports) == B_CHANGED
