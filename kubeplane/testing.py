"""pytest plugin (entry point `kubeplane`): fixtures that bring up a kubeplane lab and always tear it down.

    def test_pods_reach_each_other(lab_factory):
        lab = lab_factory("examples/shop")           # a manifests path, or a Cluster object
        reply = lab.http_get("shop/client", "http://10.244.2.2:8080/")
        assert reply["client"].startswith(lab.pod_ip("shop", "client") + ":")

    @pytest.mark.lab("examples/shop")
    def test_with_marker(lab):
        ...

Each lab gets a unique name (`t` + 6 random characters), so runs and parallel sessions never collide; labs
are torn down after the test even when it fails, and `Lab.up` cleans up after itself if building fails. The
fixtures skip the test, with the reason, when not running as root. Without a `lab` marker the `lab` fixture
builds `demo_cluster()` (two nodes, one echo pod each). A relative marker path is looked up beside the test
file first, then in the current directory.
"""

from __future__ import annotations

import os
import secrets
import socket
import string
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from pyroute2 import IPRoute

from kubeplane.model.objects import Cluster
from kubeplane.netns.demo_cluster import demo_cluster
from kubeplane.netns.lab import Lab, load_manifests
from kubeplane.netns.names import lab_prefix
from kubeplane.netns.nsfs import create_netns, in_netns, remove_netns

LabSource = Cluster | str | os.PathLike[str]
LabFactory = Callable[..., Lab]

_NAME_ALPHABET = string.ascii_lowercase + string.digits


def unique_lab_name() -> str:
    """`t` plus six random [a-z0-9] characters: a valid lab name no other run will pick."""
    return "t" + "".join(secrets.choice(_NAME_ALPHABET) for _ in range(6))


def free_port() -> int:
    """A loopback port free for both UDP and TCP right now (for a DNS server under test)."""
    for _ in range(20):
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as udp:
            udp.bind(("127.0.0.1", 0))
            port = int(udp.getsockname()[1])
            with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as tcp:
                try:
                    tcp.bind(("127.0.0.1", port))
                except OSError:
                    continue
                return port
    raise OSError("no free loopback port")


def skip_unless_root() -> None:
    if os.geteuid() != 0:
        pytest.skip("kubeplane lab fixtures need root (they create network namespaces)")


def _as_cluster(source: LabSource) -> Cluster:
    if isinstance(source, Cluster):
        return source
    return load_manifests([Path(source)])


def _loopback_up() -> None:
    with IPRoute() as ipr:
        ipr.link("set", index=ipr.link_lookup(ifname="lo")[0], state="up")


@pytest.fixture
def netns_factory() -> Iterator[Callable[[str], str]]:
    """Call it as `netns_factory(suffix="ns") -> str`: a fresh named network namespace (loopback up) called
    `kp-<unique>-<suffix>`, removed when the test ends. For tests that need a bare namespace, not a lab."""
    skip_unless_root()
    owner = unique_lab_name()
    made: list[str] = []

    def make(suffix: str = "ns") -> str:
        netns = f"{lab_prefix(owner)}{suffix}"
        made.append(netns)
        create_netns([netns])
        in_netns(netns, _loopback_up)
        return netns

    try:
        yield make
    finally:
        for netns in made:
            remove_netns(netns)


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line(
        "markers", "lab(source, workloads=True): build the `lab` fixture from a manifests path or a Cluster"
    )


@pytest.fixture
def lab_factory() -> Iterator[LabFactory]:
    """Call it as `lab_factory(source, *, name=None, workloads=True) -> Lab` (already up); every lab it made
    is brought down when the test ends."""
    skip_unless_root()
    made: list[Lab] = []

    def make(source: LabSource, *, name: str | None = None, workloads: bool = True) -> Lab:
        cluster = _as_cluster(source)
        lab = Lab(name or unique_lab_name())
        made.append(lab)
        return lab.up(cluster, workloads=workloads)

    try:
        yield make
    finally:
        for lab in reversed(made):
            lab.down()


@pytest.fixture
def lab(request: pytest.FixtureRequest, lab_factory: LabFactory) -> Lab:
    """A lab built from the test's `lab` marker (source and keyword arguments), or `demo_cluster()`."""
    marker = request.node.get_closest_marker("lab")
    if marker is None:
        return lab_factory(demo_cluster())
    source = marker.args[0] if marker.args else demo_cluster()
    if not isinstance(source, Cluster) and not Path(source).is_absolute():
        beside_test = request.path.parent / source
        source = beside_test if beside_test.exists() else source
    return lab_factory(source, **marker.kwargs)
