"""How lab clients read resolv.conf: the names glibc would try, in its order."""

from __future__ import annotations

from kubeplane.netns.clients import ResolvConf

POD_RESOLV = (
    "search shop.svc.cluster.local svc.cluster.local cluster.local\nnameserver 10.96.0.10\noptions ndots:5\n"
)


def test_parse_reads_nameservers_search_and_ndots() -> None:
    conf = ResolvConf.parse("# comment\n" + POD_RESOLV + "nameserver 10.96.0.11\n")
    assert conf == ResolvConf(
        ("10.96.0.10", "10.96.0.11"), ("shop.svc.cluster.local", "svc.cluster.local", "cluster.local"), 5
    )


def test_short_names_try_the_search_list_first() -> None:
    assert ResolvConf.parse(POD_RESOLV).candidates("web") == [
        "web.shop.svc.cluster.local.",
        "web.svc.cluster.local.",
        "web.cluster.local.",
        "web.",
    ]


def test_names_with_enough_dots_and_absolute_names_go_as_is_first() -> None:
    conf = ResolvConf.parse(POD_RESOLV)
    assert conf.candidates("a.b.c.d.e.f")[0] == "a.b.c.d.e.f."
    assert conf.candidates("web.shop.svc.cluster.local.") == ["web.shop.svc.cluster.local."]
