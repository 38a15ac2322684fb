"""Lab naming: short valid lab names, deterministic namespace names, interface names within 15 characters."""

from __future__ import annotations

import pytest

from kubeplane.netns import names


@pytest.mark.parametrize("lab", ["a", "lab", "t3fa2c1x", "0"])
def test_short_lowercase_alphanumeric_lab_names_are_accepted(lab: str) -> None:
    assert names.validate_lab_name(lab) == lab


@pytest.mark.parametrize("lab", ["", "toolongname", "Lab", "a-b", "a_b", "a.b"])
def test_lab_names_that_could_break_the_prefix_rule_are_refused(lab: str) -> None:
    with pytest.raises(names.BadLabName, match="1-8 characters"):
        names.validate_lab_name(lab)


def test_namespace_names_say_lab_and_node_or_pod() -> None:
    assert names.node_netns("lab", "a") == "kp-lab-node-a"
    assert names.pod_netns("lab", "shop", "web-1") == "kp-lab-shop-web-1"
    assert names.underlay_netns("lab") == "kp-lab-underlay"
    assert names.external_netns("lab") == "kp-lab-external"
    assert all(n.startswith(names.lab_prefix("lab")) for n in (names.node_netns("lab", "x"),))


def test_one_lab_prefix_is_never_a_prefix_of_another_labs_names() -> None:
    assert not names.node_netns("ab", "x").startswith(names.lab_prefix("a"))


def test_interface_names_fit_the_kernel_limit_and_stay_unique_when_truncated() -> None:
    long_pod = "a-very-long-pod-name-that-goes-on"
    first = names.pod_veth_ifname("shop", long_pod)
    second = names.pod_veth_ifname("shop", long_pod + "-2")
    assert len(first) <= names.IFNAME_MAX and len(second) <= names.IFNAME_MAX
    assert first != second
    assert first == names.pod_veth_ifname("shop", long_pod)  # deterministic
    assert names.pod_veth_ifname("a", "web") != names.pod_veth_ifname("b", "web")
    assert len(names.node_port_ifname("worker-node-with-long-name")) <= names.IFNAME_MAX
    assert names.pod_veth_ifname("shop", "web-1").endswith("-web-1")
