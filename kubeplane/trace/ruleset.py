"""Parse iptables-save / iptables-restore text into a frozen Ruleset.

The parser accepts exactly what kube-proxy's iptables mode (and ours) writes: `*table`,
`:CHAIN POLICY [c:b]`, `-N`, `-X`, `-A CHAIN ...`, `COMMIT`; each rule's arguments are parsed by
kubeplane.trace.rule_args. Anything else is a RulesetParseError naming the line, never a silent guess: explain
must show what the kernel would do with the text, and a rule we cannot evaluate would make the trace a lie.
"""

from __future__ import annotations

import re

from kubeplane.trace.rule_args import RulesetParseError, parse_rule
from kubeplane.trace.rules import BUILTIN_CHAINS, Chain, Jump, Rule, Ruleset, Table

__all__ = ["RulesetParseError", "parse_rule", "parse_ruleset"]


# iptables-save quotes a word only with double quotes, escaping `"` and `\\` inside with a backslash.
_WORD = re.compile(r'"((?:[^"\\]|\\.)*)"|(\S+)')
_ESCAPE = re.compile(r"\\(.)")


def split_words(line: str, where: str) -> list[str]:
    """Split a rule line into words the way iptables-restore does (a regex: shlex is ten times slower)."""
    words: list[str] = []
    position = 0
    for found in _WORD.finditer(line):
        if line[position : found.start()].strip():
            raise RulesetParseError(f"{where}: cannot split {line!r} into words")
        quoted, plain = found.groups()
        if plain is not None and '"' in plain:
            raise RulesetParseError(f"{where}: unbalanced quote in {line!r}")
        words.append(_ESCAPE.sub(r"\1", quoted) if quoted is not None else str(plain))
        position = found.end()
    return words


def parse_ruleset(*texts: str) -> Ruleset:
    """Parse iptables-save texts (e.g. the nat and filter tables rendered apart) into one Ruleset."""
    chains_by_table: dict[str, dict[str, Chain]] = {}
    rules_by_chain: dict[tuple[str, str], list[Rule]] = {}
    for text in texts:
        table: str | None = None
        for line_number, raw in enumerate(text.splitlines(), start=1):
            line = raw.strip()
            if not line or line.startswith("#"):
                continue
            where = f"line {line_number}"
            if line.startswith("*"):
                table = line[1:].strip()
                chains = chains_by_table.setdefault(table, {})
                for builtin in BUILTIN_CHAINS.get(table, ()):
                    chains.setdefault(builtin, Chain(name=builtin, policy="ACCEPT"))
                continue
            if table is None:
                raise RulesetParseError(f"{where}: {line!r} comes before any *table line")
            if line == "COMMIT":
                table = None
                continue
            _parse_command(table, line, where, chains_by_table[table], rules_by_chain)
    tables: dict[str, Table] = {}
    for table_name, chains in chains_by_table.items():
        built = {
            name: Chain(
                name=name, policy=chain.policy, rules=tuple(rules_by_chain.get((table_name, name), ()))
            )
            for name, chain in chains.items()
        }
        _check_jumps(table_name, built)
        tables[table_name] = Table(name=table_name, chains=built)
    return Ruleset(tables=tables)


def _parse_command(
    table: str,
    line: str,
    where: str,
    chains: dict[str, Chain],
    rules_by_chain: dict[tuple[str, str], list[Rule]],
) -> None:
    if line.startswith(":"):
        parts = line[1:].split()
        if len(parts) < 2:
            raise RulesetParseError(f"{where}: chain declaration {line!r} needs a name and a policy")
        name, policy = parts[0], parts[1]
        if policy not in ("ACCEPT", "DROP", "-"):
            raise RulesetParseError(f"{where}: chain {name} has unknown policy {policy!r}")
        chains[name] = Chain(name=name, policy=None if policy == "-" else policy)  # type: ignore[arg-type]
        rules_by_chain[(table, name)] = []
        return
    tokens = split_words(line, where)
    command = tokens[0]
    if command in ("-N", "--new-chain") and len(tokens) == 2:
        chains[tokens[1]] = Chain(name=tokens[1], policy=None)
        rules_by_chain[(table, tokens[1])] = []
    elif command in ("-X", "--delete-chain") and len(tokens) == 2:
        chains.pop(tokens[1], None)
        rules_by_chain.pop((table, tokens[1]), None)
    elif command in ("-A", "--append") and len(tokens) >= 2:
        chain = tokens[1]
        if chain not in chains:
            raise RulesetParseError(
                f"{where}: rule appended to chain {chain} of table {table}, never declared"
            )
        rules = rules_by_chain.setdefault((table, chain), [])
        rules.append(parse_rule(table, chain, len(rules) + 1, tokens[2:], line, where))
    else:
        raise RulesetParseError(f"{where}: unsupported command {line!r}")


def _check_jumps(table: str, chains: dict[str, Chain]) -> None:
    for chain in chains.values():
        for rule in chain.rules:
            if isinstance(rule.target, Jump) and rule.target.chain not in chains:
                raise RulesetParseError(
                    f"table {table} chain {chain.name} rule {rule.number}: {rule.target.chain} is neither a "
                    "supported target nor a declared chain"
                )
