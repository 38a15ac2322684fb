"""Reconcile kube-proxy's ipsets in a namespace with one `ipset restore` per sync.

The script is computed purely from the desired sets and the current entries (parsed from `ipset save`), and
touches only what differs: missing sets are created, missing entries added, stale entries deleted. Sets are
never destroyed here, as iptables rules may still reference them while the same sync rewrites the rules.
"""

from __future__ import annotations

from collections.abc import Iterable

from kubeplane.netns.run import run_in_netns
from kubeplane.proxy.ipvs.state import IpSet

CurrentSets = dict[str, set[str]]


def parse_ipset_save(text: str) -> CurrentSets:
    """Set name -> entries, from `ipset save` output (entries as ipset prints them, options dropped)."""
    sets: CurrentSets = {}
    for line in text.splitlines():
        parts = line.split()
        if len(parts) >= 2 and parts[0] == "create":
            sets.setdefault(parts[1], set())
        elif len(parts) >= 3 and parts[0] == "add":
            sets.setdefault(parts[1], set()).add(parts[2])
    return sets


def ipset_restore_script(desired: Iterable[IpSet], current: CurrentSets) -> tuple[str, int]:
    """The `ipset restore -exist` input that makes `current` hold `desired`, and how many entries it
    adds or deletes."""
    lines: list[str] = []
    changes = 0
    for ipset in desired:
        have = current.get(ipset.name)
        if have is None:
            lines.append(f"create {ipset.name} {ipset.set_type} {ipset.create_options}")
            have = set()
        want = set(ipset.entries)
        for entry in sorted(have - want):
            lines.append(f"del {ipset.name} {entry}")
        for entry in ipset.entries:
            if entry not in have:
                lines.append(f"add {ipset.name} {entry}")
        changes += len(have ^ want)
    return ("\n".join(lines) + "\n" if lines else ""), changes


def applied_sets(desired: Iterable[IpSet], current: CurrentSets) -> CurrentSets:
    """`current` after a successful restore of `desired` (other sets unchanged)."""
    updated = dict(current)
    for ipset in desired:
        updated[ipset.name] = set(ipset.entries)
    return updated


def read_ipsets(netns: str) -> CurrentSets:
    return parse_ipset_save(run_in_netns(netns, ["ipset", "save"]))


def restore_ipsets(netns: str, script: str) -> None:
    if script:
        run_in_netns(netns, ["ipset", "-exist", "restore"], stdin=script)
