"""Text output of explain, in the spirit of ovn-trace: the question, then each hook's rule hits, the rewrites,
and the verdict with its reason.

Levels: `detailed` also shows every rule the packet missed and why; `summary` shows hits only; `minimal` shows
only the rewrites and the verdict. Alternatives after the first print only where they part from the first.
"""

from __future__ import annotations

from typing import Literal

from kubeplane.trace.path import Alternative, Step
from kubeplane.trace.result import Explanation, alternative_reason, alternative_verdict

Level = Literal["detailed", "summary", "minimal"]


def render_text(explanation: Explanation, level: Level = "detailed") -> str:
    lines = _header(explanation)
    alternatives = explanation.alternatives
    for index, alternative in enumerate(alternatives, start=1):
        lines.append("")
        title = f"alternative {index} of {len(alternatives)}, p={alternative.probability:.4f}"
        lines.append(f"== {title}: {alternative_verdict(alternative)} ==" if len(alternatives) > 1 else "")
        if len(alternatives) == 1:
            lines.pop()
        shared = _shared_prefix(alternatives[0], alternative) if index > 1 else 0
        if level != "minimal":
            lines.extend(_steps(alternative.steps, shared, level))
        lines.extend(_rewrites(alternative))
        lines.append(f"verdict: {alternative_verdict(alternative)} - {alternative_reason(alternative)}")
    lines.append("")
    lines.append(_summary(explanation))
    return "\n".join(lines) + "\n"


def _header(explanation: Explanation) -> list[str]:
    service = explanation.destination_service
    state = explanation.ct_state
    lines = [
        f"# {explanation.packet} on node {explanation.node} ({explanation.mode} mode, conntrack {state})",
        f"# source: {explanation.source.description} [{explanation.source.kind}]",
    ]
    if service:
        lines.append(f"# destination: service {service} (as the rules' comments name it)")
    if explanation.sticky_endpoint:
        lines.append(f"# session affinity: the source is already sticky to {explanation.sticky_endpoint}")
    if state != "NEW":
        lines.append(f"# {state} packets skip the nat table: conntrack applies the connection's translation")
    return lines


def _shared_prefix(first: Alternative, other: Alternative) -> int:
    shared = 0
    for mine, theirs in zip(first.steps, other.steps, strict=False):
        if mine != theirs:
            break
        shared += 1
    return shared


def _steps(steps: tuple[Step, ...], shared: int, level: Level) -> list[str]:
    lines: list[str] = []
    shown = [s for s in steps[:shared] if s.matched or level == "detailed"]
    if shown:
        lines.append(f"  (same as alternative 1 up to: {_describe(shown[-1])})")
    section: tuple[str, str] | None = None
    for step in steps[shared:]:
        if not step.matched and level != "detailed":
            continue
        here = (step.hook, step.table or "routing")
        if here != section:
            section = here
            lines.append(f"{step.hook} · {step.table or 'routing decision'}")
        lines.append("  " + "  " * step.depth + _describe(step))
    return lines


def _describe(step: Step) -> str:
    if step.chain == "routing":
        return step.action
    if step.chain == "conntrack":
        return f"conntrack: {step.action}"
    if step.rule is None:
        return f"{step.table} {step.chain} {step.action}"
    where = f"{step.table} {step.chain} #{step.rule}"
    comment = f' "{step.comment}"' if step.comment else ""
    service = (
        f" [{step.service}]"
        if step.service and (not step.comment or step.service not in step.comment)
        else ""
    )
    return f"{where}{comment}{service}: {step.action}"


def _rewrites(alternative: Alternative) -> list[str]:
    if not alternative.rewrites:
        return []
    lines = ["rewrites:"]
    for rewrite in alternative.rewrites:
        step = rewrite.step
        origin = f"{step.table} {step.chain}" + (f" #{step.rule}" if step.rule is not None else "")
        lines.append(f"  {rewrite.kind:<5} {rewrite.before} -> {rewrite.after}   ({step.hook}, {origin})")
    return lines


def _summary(explanation: Explanation) -> str:
    endpoints = ", ".join(f"{c.endpoint} ({c.probability:.1%})" for c in explanation.endpoints) or "none"
    masquerade = "yes" if explanation.masquerade else "no"
    return f"result: {explanation.verdict}; endpoints: {endpoints}; masquerade: {masquerade}"
