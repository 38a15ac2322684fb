"""Every name and path the lab creates, in one place: a name alone tells what a thing is and where it lives.

Network namespaces (files in /run/netns, listed by `ip netns list`):

    kp-<lab>-node-<node>        a Node: its netfilter rules are the proxy's, its `eth0` is on the underlay
    kp-<lab>-<namespace>-<pod>  a Pod: `eth0` is a veth whose other end is in its node's namespace
    kp-<lab>-underlay           the network between nodes: bridge `underlay` plus the "router" addresses
    kp-<lab>-external           a client outside the cluster (NodePort, LoadBalancer, externalIP traffic)

The `kp-<lab>-` prefix is what `lab down` sweeps, so a lab name is short, lowercase alphanumeric and has no
dash: `kp-a-` can never be a prefix of lab `ab`'s names. A pod name that would collide with a node or another
pod (`node/a` vs. pod `a` in namespace `node`) is refused when the lab is planned.

Interfaces (Linux limits names to 15 characters; every name is unique within its namespace only):

    pod namespace       eth0                          the pod end of the pod's veth
    node namespace      eth0                          the node end of its underlay veth
                        p<hash6>-<pod[:7]>            the node end of a pod's veth, e.g. `p3fa2c1-web-1`
    underlay namespace  underlay                      the bridge
                        n<hash6>-<node[:7]>           a node's port on the bridge
                        external                      the external client's port on the bridge
    external namespace  eth0

`<hash6>` is the first six hex digits of sha1 of `namespace/pod` (or the node name), which keeps names unique
when truncation would not; the readable tail is for people reading `ip link`.
"""

from __future__ import annotations

import hashlib
import re
from pathlib import Path

NETNS_PREFIX = "kp"
DEFAULT_LAB = "lab"
MAX_LAB_NAME = 8
IFNAME_MAX = 15

NETNS_DIR = Path("/run/netns")
ETC_NETNS_DIR = Path("/etc/netns")
STATE_ROOT = Path("/run/kubeplane")

POD_IFNAME = "eth0"
NODE_UPLINK_IFNAME = "eth0"
EXTERNAL_IFNAME = "eth0"
UNDERLAY_BRIDGE = "underlay"
UNDERLAY_EXTERNAL_PORT = "external"

_LAB_NAME_RE = re.compile(r"^[a-z0-9]{1,8}$")


class BadLabName(ValueError):
    """A lab name that would break the `kp-<lab>-` prefix rule."""


def validate_lab_name(lab: str) -> str:
    """Return `lab` unchanged if it is 1-8 characters of [a-z0-9], else raise BadLabName."""
    if not _LAB_NAME_RE.match(lab):
        raise BadLabName(f"lab name {lab!r}: must be 1-{MAX_LAB_NAME} characters of [a-z0-9]")
    return lab


def lab_prefix(lab: str) -> str:
    """The prefix every namespace of `lab` starts with, trailing dash included."""
    return f"{NETNS_PREFIX}-{lab}-"


def node_netns(lab: str, node: str) -> str:
    return f"{lab_prefix(lab)}node-{node}"


def pod_netns(lab: str, namespace: str, pod: str) -> str:
    return f"{lab_prefix(lab)}{namespace}-{pod}"


def underlay_netns(lab: str) -> str:
    return f"{lab_prefix(lab)}underlay"


def external_netns(lab: str) -> str:
    return f"{lab_prefix(lab)}external"


def _short_hash(text: str) -> str:
    return hashlib.sha1(text.encode()).hexdigest()[:6]


def pod_veth_ifname(namespace: str, pod: str) -> str:
    """The node-side name of a pod's veth: `p<hash6>-<pod[:7]>`, at most 15 characters."""
    return f"p{_short_hash(f'{namespace}/{pod}')}-{pod[:7]}"


def node_port_ifname(node: str) -> str:
    """The underlay-side name of a node's veth: `n<hash6>-<node[:7]>`, at most 15 characters."""
    return f"n{_short_hash(node)}-{node[:7]}"


def state_dir(lab: str) -> Path:
    """Where the lab's state.json, workload specs, readiness and supervisor log live."""
    return STATE_ROOT / lab


def etc_netns_dir(netns: str) -> Path:
    """The directory `ip netns exec` bind-mounts over /etc (resolv.conf, hosts)."""
    return ETC_NETNS_DIR / netns
