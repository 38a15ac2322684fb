"""Apply a node's IPVS-mode state to its namespace, reconciling rather than rewriting (kube-proxy's IPVS
syncProxyRules).

Each sync plans the node, computes the desired state per family, then: binds new VIPs to kube-ipvs0, brings
the ipsets in line with one `ipset restore`, rewrites the few iptables chains with one `iptables-restore
--noflush`, applies the IPVS differences over netlink, and finally unbinds VIPs no longer used (last, as
kube-proxy does, so a VIP never disappears before its virtual server).

What the kernel holds is read back on the first sync, after any failure, and every `full_sync_period`; in
between the proxier trusts what it applied and re-reads only the virtual servers with draining real servers
(their connection counts decide when they can go). That keeps a one-endpoint change cheap at 10k services.

The core is blocking (netlink and subprocesses); `sync_async` runs it on a worker thread for the daemon.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field

from pyroute2.netlink.exceptions import NetlinkError

from kubeplane.model.objects import Cluster, IPFamily
from kubeplane.netns.nsfs import in_netns, write_sysctl
from kubeplane.netns.run import CommandFailed, run_in_netns
from kubeplane.proxy.conntrack import ConntrackTargets, clear_stale_entries, stale_targets
from kubeplane.proxy.iptables.render import JumpRule
from kubeplane.proxy.iptables.tools import IptablesBackend, IptablesTools
from kubeplane.proxy.ipvs.desired import desired_ipvs_state
from kubeplane.proxy.ipvs.dummy import DummyInterface
from kubeplane.proxy.ipvs.ipset_sync import (
    CurrentSets,
    applied_sets,
    ipset_restore_script,
    read_ipsets,
    restore_ipsets,
)
from kubeplane.proxy.ipvs.iptables_rules import JUMPS, render_ipvs_iptables
from kubeplane.proxy.ipvs.netlink import IpvsNetlink, IpvsUnavailable
from kubeplane.proxy.ipvs.operations import KernelRealServer, KernelVirtualService
from kubeplane.proxy.ipvs.reconcile import DrainingRealServer, plan_ipvs_changes
from kubeplane.proxy.ipvs.state import IpvsState, VirtualServerKey
from kubeplane.proxy.plan import NodePlan, PlanCache, plan_node

log = logging.getLogger(__name__)

FULL_SYNC_PERIOD_SECONDS = 60.0  # kube-proxy re-checks graceful deletions once a minute
# Sysctls kube-proxy's IPVS mode sets: conntrack for IPVS connections (so iptables can masquerade them),
# expire connections whose real server is gone (also for persistence templates), and forwarding.
IPVS_SYSCTLS = (
    ("net.ipv4.vs.conntrack", "1"),
    ("net.ipv4.vs.expire_nodest_conn", "1"),
    ("net.ipv4.vs.expire_quiescent_template", "1"),
    ("net.ipv4.ip_forward", "1"),
)
STRICT_ARP_SYSCTLS = (("net.ipv4.conf.all.arp_ignore", "1"), ("net.ipv4.conf.all.arp_announce", "2"))


@dataclass(frozen=True)
class IpvsSyncResult:
    """What one sync did. `ok` False: something was not applied; the next sync re-reads the kernel."""

    node: str
    ok: bool
    full: bool
    families: tuple[IPFamily, ...]
    virtual_servers: int
    real_servers: int
    ipvs_operations: int
    draining: int
    ipset_changes: int
    addresses_bound: int
    addresses_unbound: int
    conntrack_deleted: int
    seconds: float
    plan: NodePlan
    errors: tuple[str, ...] = ()


@dataclass
class _Counts:
    virtual_servers: int = 0
    real_servers: int = 0
    ipvs_operations: int = 0
    draining: int = 0
    ipset_changes: int = 0
    addresses_bound: int = 0
    addresses_unbound: int = 0
    errors: list[str] = field(default_factory=list)


class IpvsProxier:
    """Keeps one node namespace's IPVS tables, kube-ipvs0, ipsets and IPVS iptables rules in line with the
    cluster. iptables goes through the legacy backend by default: kernels built for IPVS tests (Debian's UML
    kernel) have no nf_tables."""

    def __init__(
        self,
        netns: str,
        node_name: str,
        *,
        backend: IptablesBackend = IptablesBackend.LEGACY,
        full_sync_period: float = FULL_SYNC_PERIOD_SECONDS,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.netns = netns
        self.node_name = node_name
        self.backend = backend
        self.full_sync_period = full_sync_period
        self._clock = clock
        self._last_full: float | None = None
        self._kernel: dict[IPFamily, dict[VirtualServerKey, KernelVirtualService]] = {}
        self._draining: dict[IPFamily, tuple[DrainingRealServer, ...]] = {}
        self._ipsets: CurrentSets | None = None
        self._bound: set[str] | None = None
        self._plan: NodePlan | None = None
        self._plans = PlanCache()  # only services whose objects changed are planned again

    @property
    def last_plan(self) -> NodePlan | None:
        return self._plan

    def request_full_sync(self) -> None:
        self._last_full = None

    async def sync_async(self, cluster: Cluster) -> IpvsSyncResult:
        return await asyncio.to_thread(self.sync, cluster)

    def sync(self, cluster: Cluster) -> IpvsSyncResult:
        """Plan the node from `cluster` and reconcile the namespace with it. Failures are reported in the
        result; IpvsUnavailable (no IPVS in this kernel) and UnknownNodeError are raised."""
        started = time.perf_counter()
        plan = plan_node(cluster, self.node_name, self._plans)
        families: tuple[IPFamily, ...] = ("IPv4", "IPv6") if plan.ports_for("IPv6") else ("IPv4",)
        now = self._clock()
        full = self._last_full is None or now - self._last_full >= self.full_sync_period
        counts = _Counts()
        with IpvsNetlink(self.netns) as ipvs, DummyInterface(self.netns) as dummy:
            if self._last_full is None:
                self._set_sysctls(cluster.proxy_config.ipvs_strict_arp)
            bound_now = dummy.addresses() if full or self._bound is None else set(self._bound)
            wanted_addresses: set[str] = set()
            for family in families:
                state = desired_ipvs_state(plan, family, cluster.proxy_config.ipvs_scheduler)
                wanted_addresses.update(state.bound_addresses)
                try:
                    self._sync_family(plan, state, ipvs, dummy, bound_now, full, counts)
                except (CommandFailed, OSError, NetlinkError) as err:
                    counts.errors.append(f"{family}: {err}")
            if not counts.errors:
                stale = bound_now - wanted_addresses
                counts.addresses_unbound = dummy.unbind(sorted(stale))
                self._bound = (bound_now | wanted_addresses) - stale
        ok = not counts.errors
        conntrack_deleted = 0
        if ok:
            # IPVS drops a UDP packet whose conntrack entry still names a removed real server: clear them,
            # as kube-proxy does after every sync.
            for family in families:
                conntrack_deleted += self._clear_conntrack(stale_targets(self._plan, plan, family))
        if ok and full:
            self._last_full = now
        if not ok:
            self._last_full = None
            self._ipsets = None
            self._bound = None
            log.error("ipvs sync failed node=%s errors=%s", self.node_name, "; ".join(counts.errors))
        self._plan = plan
        seconds = time.perf_counter() - started
        log.info(
            "ipvs sync node=%s full=%s virtual_servers=%d real_servers=%d operations=%d draining=%d "
            "ipset_changes=%d seconds=%.3f",
            self.node_name,
            full,
            counts.virtual_servers,
            counts.real_servers,
            counts.ipvs_operations,
            counts.draining,
            counts.ipset_changes,
            seconds,
        )
        return IpvsSyncResult(
            node=self.node_name,
            ok=ok,
            full=full,
            families=families,
            virtual_servers=counts.virtual_servers,
            real_servers=counts.real_servers,
            ipvs_operations=counts.ipvs_operations,
            draining=counts.draining,
            ipset_changes=counts.ipset_changes,
            addresses_bound=counts.addresses_bound,
            addresses_unbound=counts.addresses_unbound,
            conntrack_deleted=conntrack_deleted,
            seconds=seconds,
            plan=plan,
            errors=tuple(counts.errors),
        )

    def _clear_conntrack(self, targets: ConntrackTargets) -> int:
        """Clear stale entries; an entry can vanish between dump and delete (IPVS expires its own flows'
        entries), which pyroute2 reports as a NetlinkError: dump again, once."""
        for attempt in (1, 2):
            try:
                return clear_stale_entries(self.netns, targets)
            except NetlinkError as err:
                log.warning(
                    "conntrack cleanup raced node=%s attempt=%d error=%s", self.node_name, attempt, err
                )
        return 0

    def _set_sysctls(self, strict_arp: bool) -> None:
        settings = IPVS_SYSCTLS + (STRICT_ARP_SYSCTLS if strict_arp else ())

        def write_all() -> None:
            for key, value in settings:
                write_sysctl(key, value)

        in_netns(self.netns, write_all)

    def _sync_family(
        self,
        plan: NodePlan,
        state: IpvsState,
        ipvs: IpvsNetlink,
        dummy: DummyInterface,
        bound_now: set[str],
        full: bool,
        counts: _Counts,
    ) -> None:
        family = state.family
        counts.addresses_bound += dummy.bind(a for a in state.bound_addresses if a not in bound_now)

        if full or self._ipsets is None:
            self._ipsets = read_ipsets(self.netns)
        script, ipset_changes = ipset_restore_script(state.ipsets, self._ipsets)
        restore_ipsets(self.netns, script)
        self._ipsets = applied_sets(state.ipsets, self._ipsets)
        counts.ipset_changes += ipset_changes

        tools = IptablesTools(self.netns, family, self.backend)
        rules = render_ipvs_iptables(plan, state)
        missing = self._missing_jumps(tools) if full else ()
        tools.restore(rules.restore_text(missing))

        current = self._current_kernel_state(ipvs, state, full)
        changes = plan_ipvs_changes(tuple(current.values()), state.services)
        failures = ipvs.apply(changes.operations)
        counts.errors.extend(str(f) for f in failures)
        counts.ipvs_operations += len(changes.operations)
        counts.draining += len(changes.draining)
        counts.virtual_servers += len(state.services)
        counts.real_servers += sum(len(vs.real_servers) for vs in state.services)
        self._draining[family] = changes.draining
        if failures:
            self._kernel.pop(family, None)
            return
        applied: dict[VirtualServerKey, KernelVirtualService] = {
            vs.key: KernelVirtualService(vs.server, tuple(KernelRealServer(r, 0, 0) for r in vs.real_servers))
            for vs in state.services
        }
        for drain in changes.draining:
            held = applied[drain.key]
            extra = KernelRealServer(drain.real, drain.connections, 0)
            reals = tuple(sorted((*held.real_servers, extra), key=lambda r: r.real.endpoint))
            applied[drain.key] = KernelVirtualService(held.server, reals)
        self._kernel[family] = applied

    def _current_kernel_state(
        self, ipvs: IpvsNetlink, state: IpvsState, full: bool
    ) -> dict[VirtualServerKey, KernelVirtualService]:
        """The kernel's virtual services of the state's family: read in full, or the applied copy with the
        virtual servers that lose a real server (or still drain one) re-read, since only the kernel knows
        their connection counts."""
        family = state.family
        cached = self._kernel.get(family)
        if full or cached is None:
            return {vs.key: vs for vs in ipvs.dump() if vs.key.family == family}
        refresh = {d.key for d in self._draining.get(family, ())}
        for want in state.services:
            held = cached.get(want.key)
            if held is not None and {r.real.endpoint for r in held.real_servers} - {
                r.endpoint for r in want.real_servers
            }:
                refresh.add(want.key)
        if not refresh:
            return cached
        current = dict(cached)
        for key in refresh:
            reals = ipvs.real_servers_of(key)
            if reals is None:
                current.pop(key, None)
            elif key in current:
                current[key] = KernelVirtualService(current[key].server, reals)
        return current

    def _missing_jumps(self, tools: IptablesTools) -> tuple[JumpRule, ...]:
        """The jump rules from built-in chains that are not there yet (kube-proxy's EnsureRule)."""
        saved = {table: run_in_netns(self.netns, tools.save_argv(table)) for table in ("nat", "filter")}
        return tuple(j for j in JUMPS if f"-A {j.chain} {j.spec}" not in saved[j.table].splitlines())

    def cleanup(self) -> None:
        """Remove the virtual servers and kube-ipvs0 (with every VIP) from the namespace, for a node that
        leaves IPVS mode while its namespace stays; the few chains and sets stay (inert without VIPs)."""
        try:
            with IpvsNetlink(self.netns) as ipvs:
                current = ipvs.dump()
                changes = plan_ipvs_changes(current, ())
                ipvs.apply(changes.operations)
        except IpvsUnavailable:
            pass
        with DummyInterface(self.netns) as dummy:
            dummy.delete()
        self._kernel.clear()
        self._ipsets = None
        self._bound = None
        self._last_full = None
