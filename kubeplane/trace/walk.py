"""Walk a packet through a parsed ruleset hook by hook, with the kernel's semantics.

Hook order. A packet that arrives at the node passes nat PREROUTING, then the routing decision sends it to
filter INPUT (+ nat INPUT) when its (possibly DNATed) destination is local, else to filter FORWARD and nat
POSTROUTING. A packet the node sends itself passes nat OUTPUT, filter OUTPUT and nat POSTROUTING, then filter
INPUT if it loops back to a local address.

Chains. Rules are tried in order; `-j` calls a chain and RETURN (or falling off its end) comes back to the
rule after the call; `-g` replaces the current chain, so RETURN goes to whoever called the chain that did the
goto. Falling off a built-in chain applies its policy. ACCEPT ends the table for this hook; DROP and REJECT
end the packet; DNAT/SNAT/MASQUERADE rewrite and end the nat table for this hook; MARK and rules without a
target go on.

Conntrack. Only a connection's first packet (NEW) consults the nat table; ESTABLISHED/RELATED packets get the
translation conntrack stored (a NatBinding the caller passes in) and INVALID ones none. Marks are per packet.

Tables. A table absent from the ruleset is not traversed at all (iptables-nft registers a table's hooks only
once the table exists), so it leaves no policy step behind; a built-in chain a present table never declared
is empty with policy ACCEPT.

Alternatives. `-m statistic` forks the walk; each finished path is an Alternative with its probability.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, replace
from typing import Literal

from kubeplane.trace.ipvs import IpvsTable, schedule
from kubeplane.trace.match import MatchView, evaluate
from kubeplane.trace.packet import CtState, NodeContext, Packet
from kubeplane.trace.path import Alternative, Delivery, NatBinding, Outcome, Rewrite, Step
from kubeplane.trace.rules import (
    DnatTarget,
    Jump,
    MarkTarget,
    Match,
    RecentMatch,
    Rule,
    Ruleset,
    SnatTarget,
    StatisticMatch,
    Verdict,
)
from kubeplane.trace.services import ServiceNames

DELIVERIES: dict[str, Delivery] = {"local": "local", "forward": "forwarded", "sent": "sent"}
MAX_STEPS = 200_000  # bounds a walk over a looping or enormous ruleset
MAX_DEPTH = 64


class WalkError(ValueError):
    """The ruleset cannot be walked (a loop, a NAT target in a hook that refuses it, too many steps)."""


@dataclass(frozen=True)
class _Trail:
    step: Step
    previous: _Trail | None

    def steps(self) -> tuple[Step, ...]:
        collected: list[Step] = []
        node: _Trail | None = self
        while node is not None:
            collected.append(node.step)
            node = node.previous
        return tuple(reversed(collected))


@dataclass(frozen=True)
class _Flow:
    packet: Packet
    probability: float
    trail: _Trail | None
    rewrites: tuple[Rewrite, ...]
    recent_lists: frozenset[str]
    binding: NatBinding
    accepted_by_rule: bool = False
    ipvs_virtual: tuple[str, str, int] | None = None

    def add(self, step: Step) -> _Flow:
        return replace(self, trail=_Trail(step, self.trail))


@dataclass(frozen=True)
class _Cursor:
    flow: _Flow
    stack: tuple[tuple[str, int], ...]  # (chain, index of the next rule); goto replaces the top frame


@dataclass(frozen=True)
class _Finished:
    flow: _Flow
    outcome: Outcome
    ended_by: Step | None


@dataclass(frozen=True)
class WalkInput:
    """Everything one walk depends on besides the ruleset and the node."""

    packet: Packet
    from_this_node: bool  # True: starts at OUTPUT; False: arrives at PREROUTING
    ct_state: CtState = "NEW"
    sticky_lists: frozenset[str] = frozenset()  # recent lists already holding the source (affinity)
    binding: NatBinding | None = None  # for non-NEW packets: the connection's translation
    in_interface: str | None = None
    record_misses: bool = True
    sticky_endpoint: str | None = None  # for IPVS persistence: the real server the source sticks to
    from_pod_here: bool = False  # a pod of this node sent it (physdev matches)


class Walker:
    """Walks packets through one node's ruleset (and IPVS table, in IPVS mode); stateless between walks."""

    def __init__(self, ruleset: Ruleset, context: NodeContext, ipvs: IpvsTable | None = None) -> None:
        self.ruleset = ruleset
        self.context = context
        self.ipvs = ipvs
        self.services = ServiceNames.from_ruleset(ruleset)

    def walk(self, given: WalkInput) -> tuple[Alternative, ...]:
        start = _Flow(
            packet=given.packet,
            probability=1.0,
            trail=None,
            rewrites=(),
            recent_lists=given.sticky_lists,
            binding=NatBinding(),
        )
        self._steps_left = MAX_STEPS
        self._given = given
        stages = (
            ("OUTPUT/nat", "OUTPUT/filter", "route", "POSTROUTING/nat", "deliver")
            if (given.from_this_node)
            else ("PREROUTING/nat", "route")
        )
        return tuple(self._run(start, stages))

    def _run(self, flow: _Flow, stages: tuple[str, ...]) -> Iterator[Alternative]:
        if not stages:
            yield self._finish(flow, "ACCEPT", None, "none")
            return
        stage, rest = stages[0], stages[1:]
        if stage == "route":
            yield from self._route(flow, rest)
            return
        if stage == "ipvs":
            yield from self._ipvs(flow, rest)
            return
        if stage == "deliver":
            local = self.context.is_local(flow.packet.dst)
            if local:
                yield from self._run(flow, ("INPUT/filter", "ipvs", "local"))
            else:
                yield self._finish(flow, "ACCEPT", None, "sent")
            return
        if stage in DELIVERIES:
            yield self._finish(flow, "ACCEPT", None, DELIVERIES[stage])
            return
        hook, table = stage.split("/")
        for result in self._hook(flow, hook, table):
            if result.outcome == "ACCEPT":
                yield from self._run(result.flow, rest)
            else:
                yield self._finish(result.flow, result.outcome, result.ended_by, "none")

    def _route(self, flow: _Flow, rest: tuple[str, ...]) -> Iterator[Alternative]:
        dst = flow.packet.dst
        local = self.context.is_local(dst)
        if self._given.from_this_node:
            where = "is local: loops back" if local else "is not local: leaves the node"
            yield from self._run(flow.add(_route_step("OUTPUT", f"route: {dst} {where}")), rest)
            return
        if local:
            step = _route_step("PREROUTING", f"route: {dst} is local -> INPUT")
            yield from self._run(flow.add(step), ("INPUT/filter", "ipvs", "INPUT/nat", "local"))
        else:
            step = _route_step("PREROUTING", f"route: {dst} is not local -> FORWARD")
            yield from self._run(flow.add(step), ("FORWARD/filter", "POSTROUTING/nat", "forward"))

    def _ipvs(self, flow: _Flow, rest: tuple[str, ...]) -> Iterator[Alternative]:
        """IPVS's LOCAL_IN hook: a packet to a virtual server goes to a real server, out through OUTPUT."""
        entry = self.ipvs.lookup(flow.packet) if self.ipvs is not None else None
        if entry is None:
            yield from self._run(flow, rest)
            return
        stored = self._given.binding
        replayed = stored.dnat if stored is not None and stored.by_ipvs else None
        if self._given.ct_state != "NEW" and replayed is not None:
            choices = [(1.0, replayed)]
            why = f"IPVS entry of this {self._given.ct_state} connection"
        else:
            choices = schedule(entry, self._given.sticky_endpoint)
            why = f"{entry.scheduler}, one of {len(entry.real_servers)} real servers"
        before = _ep(flow.packet.dst, flow.packet.dport)
        if not choices:
            step = Step(
                "INPUT", "ipvs", str(entry), None, entry.service, "no real server: ICMP port unreachable"
            )
            yield self._finish(flow.add(step), "REJECT", step, "none")
            return
        # IPVS sends the packet through LOCAL_OUT: filter OUTPUT, then nat POSTROUTING unless the node sent
        # it (its source NAT was already decided on the way out).
        local = self._given.from_this_node
        onward = ("OUTPUT/filter", "sent") if local else ("OUTPUT/filter", "POSTROUTING/nat", "forward")
        for share, (ip, port) in choices:
            action = f"DNAT {before} -> {_ep(ip, port)} ({why})"
            step = Step("INPUT", "ipvs", str(entry), None, entry.service, action, service=entry.service)
            chosen = replace(
                flow.add(step),
                packet=flow.packet.with_destination(ip, port),
                probability=flow.probability * share,
                rewrites=(*flow.rewrites, Rewrite("DNAT", before, _ep(ip, port), step)),
                binding=replace(flow.binding, dnat=(ip, port), by_ipvs=True),
                ipvs_virtual=(entry.protocol, entry.address, entry.port),
            )
            yield from self._run(chosen, onward)

    def _finish(
        self, flow: _Flow, outcome: Outcome, ended_by: Step | None, delivery: Delivery
    ) -> Alternative:
        return Alternative(
            probability=flow.probability,
            packet=flow.packet,
            steps=flow.trail.steps() if flow.trail else (),
            rewrites=flow.rewrites,
            outcome=outcome,
            delivery=delivery if outcome == "ACCEPT" else "none",
            ended_by=ended_by,
            binding=flow.binding,
            accepted_by_rule=flow.accepted_by_rule,
        )

    # --- one table at one hook -----------------------------------------------------------------------

    def _hook(self, flow: _Flow, hook: str, table: str) -> list[_Finished]:
        if table == "nat" and self._given.ct_state != "NEW":
            return [_Finished(self._replay_conntrack(flow, hook), "ACCEPT", None)]
        if table not in self.ruleset.tables:
            return [
                _Finished(flow, "ACCEPT", None)
            ]  # iptables-nft registers a table's hooks only once it exists
        finished: list[_Finished] = []
        work = [_Cursor(flow, ((hook, 0),))]
        table_rules = self.ruleset.table(table)
        while work:
            self._steps_left -= 1
            if self._steps_left < 0:
                raise WalkError(f"walk exceeded {MAX_STEPS} steps: a rule loop or an enormous ruleset")
            cursor = work.pop()
            chain_name, index = cursor.stack[-1]
            chain = table_rules.chain(chain_name)
            if index >= len(chain.rules):
                if len(cursor.stack) == 1:
                    policy = chain.policy or "ACCEPT"
                    step = Step(hook, table, chain_name, None, None, f"policy {policy}")
                    finished.append(
                        _Finished(cursor.flow.add(step), policy, step if policy == "DROP" else None)
                    )
                else:
                    work.append(_Cursor(cursor.flow, cursor.stack[:-1]))
                continue
            rule = chain.rules[index]
            advanced = (*cursor.stack[:-1], (chain_name, index + 1))
            produced: list[_Cursor] = []
            for matched, flow_after, reason in self._match(rule, cursor.flow, hook):
                depth = len(cursor.stack) - 1
                if not matched:
                    if self._given.record_misses:
                        flow_after = flow_after.add(self._step(rule, hook, depth, f"miss: {reason}", False))
                    produced.append(_Cursor(flow_after, advanced))
                    continue
                result = self._target(rule, flow_after, cursor.stack, advanced, hook, depth, reason)
                if isinstance(result, _Finished):
                    finished.append(result)
                else:
                    produced.append(result)
            work.extend(reversed(produced))
        return finished

    def _match(self, rule: Rule, flow: _Flow, hook: str) -> list[tuple[bool, _Flow, str]]:
        """Every outcome of the rule's matches, in order: (matched, flow with probability/recent, why)."""
        branches: list[tuple[bool, _Flow, str]] = [(True, flow, "")]
        for match in rule.matches:
            expanded: list[tuple[bool, _Flow, str]] = []
            for still, current, reasons in branches:
                if not still:
                    expanded.append((still, current, reasons))
                    continue
                for outcome in evaluate(match, self._view(current, hook), self.context):
                    updated = current
                    if outcome.probability != 1.0:
                        updated = replace(updated, probability=updated.probability * outcome.probability)
                    if outcome.recent_lists is not None:
                        updated = replace(updated, recent_lists=outcome.recent_lists)
                    why = (
                        outcome.reason
                        if not outcome.matched
                        else _join_reasons(reasons, outcome.reason, match)
                    )
                    expanded.append((outcome.matched, updated, why))
            branches = expanded
        return [(matched, f, reason) for matched, f, reason in branches if f.probability > 0.0]

    def _view(self, flow: _Flow, hook: str) -> MatchView:
        states: set[str] = {self._given.ct_state}
        if flow.binding.dnat is not None:
            states.add("DNAT")
        if flow.binding.snat is not None:
            states.add("SNAT")
        in_interface: str | None
        if self._given.from_this_node:
            # A packet the node sends has no input interface until it loops back in (`-i X` never holds).
            in_interface = "lo" if hook == "INPUT" else ""
        else:
            in_interface = self._given.in_interface
        return MatchView(
            packet=flow.packet,
            ct_states=frozenset(states),
            recent_lists=flow.recent_lists,
            in_interface=in_interface,
            from_pod_here=self._given.from_pod_here,
            ipvs_virtual=flow.ipvs_virtual,
            out_interface=self.context.out_interface(flow.packet.dst)
            if hook not in ("PREROUTING", "INPUT")
            else None,
        )

    def _step(self, rule: Rule, hook: str, depth: int, action: str, matched: bool = True) -> Step:
        return Step(
            hook,
            rule.table,
            rule.chain,
            rule.number,
            rule.comment,
            action,
            matched,
            depth,
            self.services.for_rule(rule),
        )

    def _target(
        self,
        rule: Rule,
        flow: _Flow,
        stack: tuple[tuple[str, int], ...],
        advanced: tuple[tuple[str, int], ...],
        hook: str,
        depth: int,
        reason: str,
    ) -> _Cursor | _Finished:
        target = rule.target
        note = f" [{reason}]" if reason else ""
        if target is None:
            return _Cursor(flow.add(self._step(rule, hook, depth, f"match, no target{note}")), advanced)
        if isinstance(target, Jump):
            if len(stack) >= MAX_DEPTH:
                raise WalkError(f"chain calls nest deeper than {MAX_DEPTH} at {rule.table} {rule.chain}")
            verb = "goto" if target.goto else "jump"
            flow = flow.add(self._step(rule, hook, depth, f"{verb} {target.chain}{note}"))
            base = stack[:-1] if target.goto else advanced
            return _Cursor(flow, (*base, (target.chain, 0)))
        if isinstance(target, Verdict):
            step = self._step(rule, hook, depth, _verdict_text(target) + note)
            flow = flow.add(step)
            if target.name == "RETURN":
                if len(advanced) == 1:
                    return _Cursor(flow, ((hook, len(self.ruleset.table(rule.table).chain(hook).rules)),))
                return _Cursor(flow, advanced[:-1])
            if target.name == "ACCEPT":
                return _Finished(replace(flow, accepted_by_rule=True), "ACCEPT", None)
            return _Finished(flow, target.name, step)
        if isinstance(target, MarkTarget):
            return _Cursor(self._mark(rule, flow, target, hook, depth, note), advanced)
        if isinstance(target, DnatTarget):
            return _Finished(self._dnat(rule, flow, target, hook, depth, note), "ACCEPT", None)
        return _Finished(self._snat(rule, flow, target, hook, depth, note), "ACCEPT", None)

    def _mark(self, rule: Rule, flow: _Flow, target: MarkTarget, hook: str, depth: int, note: str) -> _Flow:
        before = flow.packet.mark
        after = target.apply(before)
        label = {"or": "--or-mark", "xor": "--xor-mark", "and": "--and-mark"}.get(target.operation)
        spec = (
            f"{label} {target.value:#x}"
            if label
            else f"--{target.operation} {target.value:#x}/{target.mask:#x}"
        )
        step = self._step(rule, hook, depth, f"MARK {spec}: {before:#x} -> {after:#x}{note}")
        packet = replace(flow.packet, mark=after)
        return replace(
            flow.add(step),
            packet=packet,
            rewrites=(*flow.rewrites, Rewrite("MARK", f"{before:#x}", f"{after:#x}", step)),
        )

    def _dnat(self, rule: Rule, flow: _Flow, target: DnatTarget, hook: str, depth: int, note: str) -> _Flow:
        if rule.table != "nat" or hook not in ("PREROUTING", "OUTPUT"):
            raise WalkError(f"DNAT in {rule.table} {rule.chain} reached from {hook}: the kernel refuses that")
        before = flow.packet
        port = target.port if target.port is not None else before.dport
        packet = before.with_destination(target.ip, port)
        step = self._step(
            rule, hook, depth, f"DNAT {_ep(before.dst, before.dport)} -> {_ep(target.ip, port)}{note}"
        )
        rewrite = Rewrite("DNAT", _ep(before.dst, before.dport), _ep(target.ip, port), step)
        binding = replace(flow.binding, dnat=(target.ip, port))
        return replace(flow.add(step), packet=packet, rewrites=(*flow.rewrites, rewrite), binding=binding)

    def _snat(self, rule: Rule, flow: _Flow, target: SnatTarget, hook: str, depth: int, note: str) -> _Flow:
        if rule.table != "nat" or hook not in ("POSTROUTING", "INPUT"):
            raise WalkError(f"SNAT in {rule.table} {rule.chain} reached from {hook}: the kernel refuses that")
        before = flow.packet.src
        after = target.to_ip or self.context.masquerade_source(flow.packet.dst)
        verb = "SNAT" if target.to_ip else "MASQUERADE"
        fully = " (random-fully ports)" if target.random_fully else ""
        step = self._step(rule, hook, depth, f"{verb} {before} -> {after}{fully}{note}")
        rewrite = Rewrite("SNAT", before, after, step)
        packet = flow.packet.with_source(after)
        binding = replace(flow.binding, snat=after)
        return replace(flow.add(step), packet=packet, rewrites=(*flow.rewrites, rewrite), binding=binding)

    def _replay_conntrack(self, flow: _Flow, hook: str) -> _Flow:
        """A non-NEW packet skips the nat table; conntrack applies the connection's stored translation."""
        stored = self._given.binding or NatBinding()
        if stored.by_ipvs:
            stored = replace(stored, dnat=None)  # IPVS replays its own translation at INPUT
        why = f"(stored for this {self._given.ct_state} connection)"
        packet = flow.packet
        kind: Literal["DNAT", "SNAT"]
        if hook in ("PREROUTING", "OUTPUT") and stored.dnat is not None:
            kind, before, after = "DNAT", _ep(packet.dst, packet.dport), _ep(*stored.dnat)
            packet = packet.with_destination(*stored.dnat)
            binding = replace(flow.binding, dnat=stored.dnat)
        elif hook == "POSTROUTING" and stored.snat is not None:
            kind, before, after = "SNAT", packet.src, stored.snat
            packet = packet.with_source(stored.snat)
            binding = replace(flow.binding, snat=stored.snat)
        else:
            return flow
        step = Step(hook, "nat", "conntrack", None, None, f"{kind} {before} -> {after} {why}")
        rewrites = (*flow.rewrites, Rewrite(kind, before, after, step))
        return replace(flow.add(step), packet=packet, rewrites=rewrites, binding=binding)


def _route_step(hook: str, action: str) -> Step:
    return Step(hook, "", "routing", None, None, action)


def _verdict_text(target: Verdict) -> str:
    if target.name == "REJECT":
        return f"REJECT ({target.reject_with})"
    return target.name


def _join_reasons(previous: str, current: str, match: Match) -> str:
    """On a hit only random draws and recent checks are worth saying; address tests show in the rule."""
    if not isinstance(match, StatisticMatch | RecentMatch):
        return previous
    return f"{previous}; {current}" if previous else current


def _ep(ip: str, port: int) -> str:
    return f"[{ip}]:{port}" if ":" in ip else f"{ip}:{port}"
