"""The IPVS mode's iptables rules and text views (`kubeplane rules --mode ipvs`), rendered without root."""

from __future__ import annotations

from proxy_builders import make_cluster, make_endpoint, make_service, make_slice

from kubeplane.model.objects import Service
from kubeplane.proxy.ipvs.desired import desired_ipvs_state
from kubeplane.proxy.ipvs.iptables_rules import JUMPS, IpvsRuleset, render_ipvs_iptables
from kubeplane.proxy.ipvs.render_text import render_ipvs_text
from kubeplane.proxy.plan import plan_node

WEB = make_service("web", "10.96.0.20", 80, target_port=8080, session_affinity="ClientIP")
WEB_SLICE = make_slice(
    "web", (make_endpoint("10.244.1.2", "node-a"), make_endpoint("10.244.2.2", "node-b")), 8080
)
NP = make_service("np", "10.96.0.21", 80, target_port=8080, type="NodePort", node_port=30080)


def rules(services: tuple[Service, ...] = (WEB, NP), node: str = "node-a", **config: object) -> IpvsRuleset:
    plan = plan_node(make_cluster(services, (WEB_SLICE,), **config), node)
    return render_ipvs_iptables(plan, desired_ipvs_state(plan, "IPv4"))


CLUSTER_IP_MATCH = (
    '-m comment --comment "Kubernetes service cluster ip + port for masquerade purpose" '
    "-m set --match-set KUBE-CLUSTER-IP"
)


def test_off_cluster_traffic_to_cluster_ips_is_marked_for_masquerade() -> None:
    assert (
        f"-A KUBE-SERVICES ! -s 10.244.0.0/16 {CLUSTER_IP_MATCH} dst,dst -j KUBE-MARK-MASQ"
        in rules().nat_rules
    )


def test_masquerade_all_marks_every_cluster_ip_packet() -> None:
    assert (
        f"-A KUBE-SERVICES {CLUSTER_IP_MATCH} dst,dst -j KUBE-MARK-MASQ"
        in rules(masquerade_all=True).nat_rules
    )


def test_without_local_detection_node_traffic_from_a_vip_is_masqueraded() -> None:
    assert (
        f"-A KUBE-SERVICES {CLUSTER_IP_MATCH} src,dst -j KUBE-MARK-MASQ" in rules(cluster_cidr="").nat_rules
    )


def test_set_rules_appear_only_for_sets_with_entries() -> None:
    nat = "\n".join(rules().nat_rules)
    assert "--match-set KUBE-NODE-PORT-TCP dst -j KUBE-MARK-MASQ" in nat
    assert "--match-set KUBE-LOOP-BACK dst,dst,src -j MASQUERADE" in nat  # node-a has a local endpoint
    assert "KUBE-NODE-PORT-UDP" not in nat and "KUBE-LOAD-BALANCER dst,dst" not in nat
    assert "KUBE-LOOP-BACK" not in "\n".join(rules(services=(NP,)).nat_rules)  # NP has no endpoints


def test_vip_filter_rejects_new_connections_to_unused_ports() -> None:
    assert rules().filter_rules[-1] == (
        "-A KUBE-IPVS-FILTER -m conntrack --ctstate NEW -m set --match-set KUBE-IPVS-IPS dst "
        "-j REJECT --reject-with icmp-port-unreachable"
    )


def test_restore_text_rewrites_our_chains_and_inserts_only_missing_jumps() -> None:
    text = rules().restore_text(missing_jumps=(JUMPS[0],))
    assert ":KUBE-SERVICES - [0:0]" in text and ":KUBE-IPVS-FILTER - [0:0]" in text
    assert ":PREROUTING" not in text and ":INPUT" not in text  # built-in chains are never flushed
    assert text.count("-I ") == 1
    assert '-I OUTPUT 1 -m comment --comment "kubernetes service portals" -j KUBE-SERVICES' in text


def test_rules_text_lists_chains_like_iptables_save() -> None:
    nat = rules().table_text("nat").splitlines()
    assert nat[:5] == [
        "*nat",
        ":PREROUTING ACCEPT [0:0]",
        ":INPUT ACCEPT [0:0]",
        ":OUTPUT ACCEPT [0:0]",
        ":POSTROUTING ACCEPT [0:0]",
    ]
    first_user_rule = next(i for i, line in enumerate(nat) if line.startswith("-A KUBE-"))
    user_chains = [line.split()[1] for line in nat[first_user_rule:] if line.startswith("-A ")]
    assert user_chains == sorted(user_chains)
    assert nat[-1] == "COMMIT"


def test_text_view_shows_virtual_servers_sets_and_rules() -> None:
    text = render_ipvs_text(plan_node(make_cluster((WEB, NP), (WEB_SLICE,)), "node-a"), scheduler="wrr")
    lines = text.splitlines()
    assert "TCP  10.96.0.20:80 wrr persistent 10800" in lines
    assert "  -> 10.244.1.2:8080              Masq    1      0          0" in lines
    assert "TCP  198.51.100.2:30080 wrr" in lines
    assert "add KUBE-NODE-PORT-TCP 30080" in lines
    assert "create KUBE-IPVS-IPS hash:ip family inet hashsize 1024 maxelem 65536" in lines
    assert "-A KUBE-MARK-MASQ -j MARK --set-xmark 0x4000/0x4000" in lines
    assert "# ipvsadm -Ln (IPv6)" not in lines
