"""The /etc/netns/<netns>/{resolv.conf,hosts} files that `ip netns exec` bind-mounts over /etc.

Pods get what kubelet (dnsPolicy ClusterFirst) and the container runtime would write: search list
`<ns>.svc.<domain> svc.<domain> <domain>`, the DNS Service IP as the only nameserver, `options ndots:5`, and
kubelet's managed hosts file. The host's own search domains are not appended, because the lab is not the host.
Nodes get the DNS Service IP as nameserver with search `svc.<domain> <domain>`, so `kubeplane exec node/a --
dig web.shop.svc.cluster.local` works (a real node would use the host resolver, which the lab cannot reach).
The external client gets no files.
"""

from __future__ import annotations

import shutil

from kubeplane.netns import names
from kubeplane.netns.plan import LabPlan, PodPlan

_HOSTS_HEADER = (
    "# Kubernetes-managed hosts file.\n"
    "127.0.0.1\tlocalhost\n"
    "::1\tlocalhost ip6-localhost ip6-loopback\n"
    "fe00::0\tip6-localnet\n"
    "fe00::0\tip6-mcastprefix\n"
    "fe00::1\tip6-allnodes\n"
    "fe00::2\tip6-allrouters\n"
)


def render_pod_resolv_conf(namespace: str, cluster_domain: str, dns_ip: str) -> str:
    search = f"{namespace}.svc.{cluster_domain} svc.{cluster_domain} {cluster_domain}"
    return f"search {search}\nnameserver {dns_ip}\noptions ndots:5\n"


def render_node_resolv_conf(cluster_domain: str, dns_ip: str) -> str:
    return f"search svc.{cluster_domain} {cluster_domain}\nnameserver {dns_ip}\n"


def render_pod_hosts(pod: PodPlan, cluster_domain: str) -> str:
    """kubelet's hosts file: the header, then the pod's own line per pod IP (FQDN first with a subdomain)."""
    names = pod.hostname
    if pod.subdomain:
        names = f"{pod.hostname}.{pod.subdomain}.{pod.namespace}.svc.{cluster_domain}\t{pod.hostname}"
    return _HOSTS_HEADER + "".join(f"{ip}\t{names}\n" for ip in pod.ips)


def etc_netns_dirs(plan: LabPlan) -> tuple[str, ...]:
    """Every /etc/netns directory the lab writes (recorded in state before writing)."""
    return tuple(str(names.etc_netns_dir(ns)) for ns in (*(n.netns for n in plan.nodes), *plan.pod_netnses))


def write_etc_files(plan: LabPlan) -> None:
    for node in plan.nodes:
        directory = names.etc_netns_dir(node.netns)
        directory.mkdir(parents=True, exist_ok=True)
        (directory / "resolv.conf").write_text(render_node_resolv_conf(plan.cluster_domain, plan.dns_ip))
    for pod in plan.pods:
        if pod.host_network:
            continue
        directory = names.etc_netns_dir(pod.netns)
        directory.mkdir(parents=True, exist_ok=True)
        resolv = render_pod_resolv_conf(pod.namespace, plan.cluster_domain, plan.dns_ip)
        (directory / "resolv.conf").write_text(resolv)
        (directory / "hosts").write_text(render_pod_hosts(pod, plan.cluster_domain))


def remove_etc_dir(path: str) -> bool:
    """Remove one /etc/netns/<netns> directory; refuses paths outside /etc/netns. False if it was absent."""
    if not path.startswith(f"{names.ETC_NETNS_DIR}/"):
        raise ValueError(f"refusing to remove {path}: not under {names.ETC_NETNS_DIR}")
    try:
        shutil.rmtree(path)
    except FileNotFoundError:
        return False
    return True
