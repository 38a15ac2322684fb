"""Which Service (and endpoint) produced a rule, read from the rules' own comments.

kube-proxy comments every per-service rule with the service port name (`ns/name:port`), optionally followed
by `-> ip:port` for the endpoint a KUBE-SVC rule picks. Reading the name from the rendered text, not from the
plan, keeps explain honest: a rule the renderer mislabelled shows up with the wrong name. Rules of a
per-service chain that carry no comment (the jump ending a KUBE-EXT chain) take the name the chain's other
rules use.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from kubeplane.trace.rules import Rule, Ruleset

_NAME = r"[a-z0-9](?:[-a-z0-9.]*[a-z0-9])?"
SERVICE_PORT_NAME = re.compile(rf"(?<![\w./-])({_NAME}/{_NAME}(?::[-a-z0-9]*)?)(?![\w/])")
PER_SERVICE_CHAIN = re.compile(r"KUBE-(?:SVC|SVL|SEP|EXT|FW|XLB)-")
ENDPOINT_SUFFIX = re.compile(r"-> (\[[0-9a-fA-F:.]+\]:\d+|[0-9.]+:\d+)")


def service_in(comment: str | None) -> str | None:
    """The `namespace/name[:port]` a comment mentions, if any."""
    if not comment:
        return None
    found = SERVICE_PORT_NAME.search(comment)
    return found.group(1) if found else None


def endpoint_in(comment: str | None) -> str | None:
    """The `ip:port` after `->` in a KUBE-SVC rule comment, if any."""
    if not comment:
        return None
    found = ENDPOINT_SUFFIX.search(comment)
    return found.group(1) if found else None


@dataclass(frozen=True)
class ServiceNames:
    """Service port names by (table, chain), for rules whose own comment names none."""

    by_chain: dict[tuple[str, str], str]

    @classmethod
    def from_ruleset(cls, ruleset: Ruleset) -> ServiceNames:
        by_chain: dict[tuple[str, str], str] = {}
        for table in ruleset.tables.values():
            for chain in table.chains.values():
                if not PER_SERVICE_CHAIN.match(chain.name):
                    continue  # KUBE-SERVICES, KUBE-NODEPORTS, built-ins: shared by every service
                for rule in chain.rules:
                    name = service_in(rule.comment)
                    if name is not None:
                        by_chain[(table.name, chain.name)] = name
                        break
        return cls(by_chain=by_chain)

    def for_rule(self, rule: Rule) -> str | None:
        own = service_in(rule.comment)
        if own is not None:
            return own
        return self.by_chain.get((rule.table, rule.chain))
