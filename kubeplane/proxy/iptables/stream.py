"""A full sync's iptables-restore input, produced in chunks so that rendering overlaps the restore.

iptables-restore parses its input as it arrives, so writing chunks while the next ones are rendered lets
Python and the restore run on two cores instead of one after the other. The content equals
`render_iptables(plan)` (plus stale-chain deletions and missing jump inserts); only the line order
differs, in ways restore does not care about: each batch of services declares its own chains right before
its rules instead of all declarations coming first, the nat table comes before filter, and stale chains
are found at the end (existing service chains minus those this render used) and deleted there.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field

from kubeplane.model.objects import IPFamily
from kubeplane.proxy.iptables.chains import is_service_chain
from kubeplane.proxy.iptables.render import (
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
from kubeplane.proxy.iptables.service_rules import RuleBuffers, write_service_port
from kubeplane.proxy.plan import NodePlan

# About 200 KiB of rules at 10 endpoints per service: several chunks fit in the restore pipe (see
# IptablesTools.restore_stream_async), so restore always has input queued while the next one renders.
SERVICES_PER_CHUNK = 64


@dataclass
class FullRestoreStream:
    """Iterate `chunks()` once; afterwards `active_nat_chains` and `stale_chains` tell what was applied."""

    plan: NodePlan
    family: IPFamily
    existing_nat_chains: frozenset[str]
    missing_jumps: tuple[JumpRule, ...] = ()
    active_nat_chains: set[str] = field(default_factory=set)
    stale_chains: tuple[str, ...] = ()

    def _inserts(self, table: str) -> str:
        return "".join(f"-I {j.chain} 1 {j.spec}\n" for j in self.missing_jumps if j.table == table)

    def chunks(self) -> Iterator[str]:
        plan, family = self.plan, self.family
        ctx = node_context(plan, family)
        mark = plan.masquerade_mark
        yield (
            "*nat\n"
            + lines_text(nat_chain_lines())
            + self._inserts("nat")
            + lines_text(static_nat_rules(mark))
        )
        filter_rules = kubelet_filter_rules(family)
        ports = plan.ports_for(family)
        for start in range(0, len(ports), SERVICES_PER_CHUNK):
            buffers = RuleBuffers()
            for sp in ports[start : start + SERVICES_PER_CHUNK]:
                write_service_port(sp, ctx, buffers, buffers)
            filter_rules.extend(buffers.filter_rules)
            self.active_nat_chains |= buffers.active_nat_chains
            yield lines_text(buffers.nat_chains) + lines_text(buffers.nat_rules)
        stale = sorted(c for c in self.existing_nat_chains - self.active_nat_chains if is_service_chain(c))
        self.stale_chains = tuple(stale)
        yield (
            "".join(f":{c} - [0:0]\n" for c in stale)
            + "".join(f"-X {c}\n" for c in stale)
            + lines_text(nodeport_tail_rules(plan, family))
            + "COMMIT\n"
        )
        yield (
            "*filter\n"
            + lines_text(filter_chain_lines(family))
            + self._inserts("filter")
            + lines_text(filter_rules)
            + lines_text(forward_rules(mark))
            + "COMMIT\n"
        )
