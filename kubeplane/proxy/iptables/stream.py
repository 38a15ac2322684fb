"""A full sync's iptables-restore input, produced in chunks so that planning and rendering overlap restore.

iptables-restore parses its input as it arrives, so writing chunks while the next ones are planned and
rendered lets Python and the restore run on two cores instead of one after the other. The content equals
`render_iptables(plan)` (plus stale-chain deletions and missing jump inserts); only the line order
differs, in ways restore does not care about: each batch of services declares its own chains right before
its rules instead of all declarations coming first, the nat table comes before filter, and what depends
on the table's current content (stale chains: existing service chains minus those this render used;
jump rules missing from the built-in chains) comes last in each table, so the proxier can read the
current tables with iptables-save while the restore already parses the services.

`head_chunks()` is everything that does not depend on the current tables; `tail_chunks(...)` the rest.
Service ports may be given as a lazy iterable (kubeplane.proxy.plan.LazyPortPlans): the first chunk goes
out before any service is planned, and "large cluster mode" (which needs the family's endpoint count) is
decided as soon as the ports planned so far exceed the threshold, or when all are planned.
"""

from __future__ import annotations

import itertools
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field

from kubeplane.model.objects import IPFamily
from kubeplane.proxy.iptables.chains import is_service_chain
from kubeplane.proxy.iptables.render import (
    LARGE_CLUSTER_ENDPOINTS,
    JumpRule,
    filter_chain_lines,
    forward_rules,
    kubelet_filter_rules,
    lines_text,
    nat_chain_lines,
    node_context,
    nodeport_tail_rules,
    static_nat_rules,
)
from kubeplane.proxy.iptables.service_rules import NodeContext, RuleBuffers, write_service_port
from kubeplane.proxy.plan import NodePlan, ServicePortPlan

# About 200 KiB of rules at 10 endpoints per service: several chunks fit in the restore pipe (see
# IptablesTools.restore_stream_async), so restore always has input queued while the next one renders.
SERVICES_PER_CHUNK = 64


@dataclass
class FullRestoreStream:
    """Iterate `head_chunks()` then `tail_chunks(...)` once (or `chunks(...)`, both); afterwards
    `ports`, `context`, `active_nat_chains` and `stale_chains` tell what was applied.

    `plan` gives the node facts; the service ports are `source` when given (in the plan's order, of
    `family` only), else `plan.ports_for(family)`."""

    plan: NodePlan
    family: IPFamily
    source: Iterable[ServicePortPlan] | None = None
    ports: list[ServicePortPlan] = field(default_factory=list)
    context: NodeContext | None = None
    active_nat_chains: set[str] = field(default_factory=set)
    stale_chains: tuple[str, ...] = ()
    _filter_rules: list[str] = field(default_factory=list)

    def chunks(
        self, existing_nat_chains: frozenset[str] = frozenset(), missing_jumps: tuple[JumpRule, ...] = ()
    ) -> Iterator[str]:
        yield from self.head_chunks()
        yield from self.tail_chunks(existing_nat_chains, missing_jumps)

    def head_chunks(self) -> Iterator[str]:
        """The nat table up to its last service: what does not depend on the tables' current content."""
        plan, family = self.plan, self.family
        yield "*nat\n" + lines_text(nat_chain_lines()) + lines_text(static_nat_rules(plan.masquerade_mark))
        source = iter(self.source if self.source is not None else self.plan.ports_for(family))
        # Large cluster mode is decided once the endpoints seen pass the threshold (more ports only add
        # endpoints), or once every port is planned.
        leading: list[ServicePortPlan] = []
        endpoints = 0
        for sp in source:
            leading.append(sp)
            endpoints += len(sp.endpoints)
            if endpoints > LARGE_CLUSTER_ENDPOINTS:
                break
        ctx = self.context = node_context(plan, family, large_cluster=endpoints > LARGE_CLUSTER_ENDPOINTS)
        self._filter_rules = kubelet_filter_rules(family)
        ports = itertools.chain(leading, source)
        while batch := list(itertools.islice(ports, SERVICES_PER_CHUNK)):
            buffers = RuleBuffers()
            for sp in batch:
                write_service_port(sp, ctx, buffers, buffers)
            self.ports.extend(batch)
            self._filter_rules.extend(buffers.filter_rules)
            self.active_nat_chains |= buffers.active_nat_chains
            yield lines_text(buffers.nat_chains) + lines_text(buffers.nat_rules)

    def tail_chunks(
        self, existing_nat_chains: frozenset[str], missing_jumps: tuple[JumpRule, ...]
    ) -> Iterator[str]:
        """The rest of nat (stale chains of `existing_nat_chains` deleted, `missing_jumps` inserted, the
        NodePort rule last in KUBE-SERVICES) and the filter table."""
        plan, family = self.plan, self.family
        stale = sorted(c for c in existing_nat_chains - self.active_nat_chains if is_service_chain(c))
        self.stale_chains = tuple(stale)
        yield (
            "".join(f":{c} - [0:0]\n" for c in stale)
            + "".join(f"-X {c}\n" for c in stale)
            + lines_text(nodeport_tail_rules(plan, family))
            + _inserts(missing_jumps, "nat")
            + "COMMIT\n"
        )
        yield (
            "*filter\n"
            + lines_text(filter_chain_lines(family))
            + _inserts(missing_jumps, "filter")
            + lines_text(self._filter_rules)
            + lines_text(forward_rules(plan.masquerade_mark))
            + "COMMIT\n"
        )


def _inserts(missing_jumps: tuple[JumpRule, ...], table: str) -> str:
    return "".join(f"-I {j.chain} 1 {j.spec}\n" for j in missing_jumps if j.table == table)
