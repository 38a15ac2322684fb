"""Text views of the IPVS mode's state, for `kubeplane rules --mode ipvs` and for diffing against a real
node: `ipvsadm -Ln` for virtual servers, `ipset save` for sets, `iptables-save` for the rules (pure)."""

from __future__ import annotations

from kubeplane.model.objects import IPFamily
from kubeplane.proxy.ipvs.desired import DEFAULT_SCHEDULER, desired_ipvs_state
from kubeplane.proxy.ipvs.iptables_rules import render_ipvs_iptables
from kubeplane.proxy.ipvs.state import IpvsState, VirtualService
from kubeplane.proxy.plan import NodePlan

IPVSADM_HEADER = (
    "IP Virtual Server version 1.2.1 (size=4096)\n"
    "Prot LocalAddress:Port Scheduler Flags\n"
    "  -> RemoteAddress:Port           Forward Weight ActiveConn InActConn\n"
)


def render_virtual_service(service: VirtualService) -> str:
    """One virtual server and its real servers as `ipvsadm -Ln` prints them (connection counts zero)."""
    server = service.server
    line = f"{server.key} {server.scheduler}"
    if server.persistence_timeout is not None:
        line += f" persistent {server.persistence_timeout}"
    if server.source_port_hash:
        line += " mh-port"
    lines = [line.replace(" ", "  ", 1)]
    for real in service.real_servers:
        lines.append(f"  -> {str(real):<28} {'Masq':<7} {real.weight:<6} {0:<10} {0:<10}".rstrip())
    return "\n".join(lines) + "\n"


def render_ipvsadm(state: IpvsState) -> str:
    return IPVSADM_HEADER + "".join(render_virtual_service(s) for s in state.services)


def render_ipset_save(state: IpvsState) -> str:
    """The sets as `ipset save` lists them: a create line, then one add line per entry."""
    lines = []
    for ipset in state.ipsets:
        lines.append(f"create {ipset.name} {ipset.set_type} {ipset.create_options}")
        lines.extend(f"add {ipset.name} {entry}" for entry in ipset.entries)
    return "\n".join(lines) + "\n"


def render_family(plan: NodePlan, family: IPFamily, scheduler: str) -> str:
    state = desired_ipvs_state(plan, family, scheduler)
    rules = render_ipvs_iptables(plan, state)
    tables = "ip6tables-save" if family == "IPv6" else "iptables-save"
    return (
        f"# ipvsadm -Ln ({family})\n{render_ipvsadm(state)}"
        f"# ipset save ({family})\n{render_ipset_save(state)}"
        f"# {tables}\n{rules.text}"
    )


def render_ipvs_text(plan: NodePlan, scheduler: str = DEFAULT_SCHEDULER) -> str:
    """Everything the IPVS mode programs on the plan's node: IPv4, then IPv6 when the node has IPv6 ports."""
    text = render_family(plan, "IPv4", scheduler)
    if plan.ports_for("IPv6"):
        text += render_family(plan, "IPv6", scheduler)
    return text
