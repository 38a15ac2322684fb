"""Split manifest text into documents (multi-document YAML, or JSON for `*.json`), expanding `kind: List`.

YAML is read with PyYAML's safe loader minus timestamp resolution, so `deletionTimestamp: 2024-01-01T00:00Z`
stays the string the API would hold. A syntax error becomes one `ManifestError` naming the file and line.
"""

from __future__ import annotations

import json
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from typing import Any

import yaml

# libyaml's parser is about nine times faster than the pure-Python one; both resolve tags the same way.
try:
    from yaml import CSafeLoader as _BaseLoader
except ImportError:
    from yaml import SafeLoader as _BaseLoader  # type: ignore[assignment]

from kubeplane.model.errors import ErrorPlace, ManifestError, ManifestErrors
from kubeplane.model.fields import describe
from kubeplane.model.objects import Source


class _ManifestLoader(_BaseLoader):
    """SafeLoader that leaves timestamps as strings (Kubernetes objects carry them as RFC 3339 text)."""


_ManifestLoader.yaml_implicit_resolvers = {
    first: [(tag, regexp) for tag, regexp in resolvers if tag != "tag:yaml.org,2002:timestamp"]
    for first, resolvers in yaml.SafeLoader.yaml_implicit_resolvers.items()
}


@dataclass(frozen=True)
class RawDocument:
    """One object's undecoded body (a mapping, normally) and where it came from."""

    source: Source
    body: Any


def split_documents(text: str, file: str) -> list[RawDocument]:
    """Every object in `text`, with `List` items expanded; raises `ManifestErrors` on a syntax error."""
    documents: list[RawDocument] = []
    for index, body in _bodies(text, file):
        if body is None:
            continue
        if isinstance(body, Mapping) and body.get("kind") == "List":
            documents.extend(_list_items(body, file, index))
        else:
            documents.append(RawDocument(Source(file, index), body))
    return documents


def _bodies(text: str, file: str) -> Iterator[tuple[int, Any]]:
    if file.endswith(".json"):
        try:
            yield 0, json.loads(text)
        except json.JSONDecodeError as err:
            place = ErrorPlace(file=file, index=0)
            raise ManifestErrors(
                [ManifestError(place, f"line {err.lineno}", f"invalid JSON: {err.msg}")]
            ) from None
        return
    try:
        yield from enumerate(yaml.load_all(text, Loader=_ManifestLoader))
    except yaml.YAMLError as err:
        mark = getattr(err, "problem_mark", None)
        where = f"line {mark.line + 1}" if mark is not None else ""
        problem = getattr(err, "problem", None) or str(err).splitlines()[0]
        place = ErrorPlace(file=file)
        raise ManifestErrors([ManifestError(place, where, f"invalid YAML: {problem}")]) from None


def _list_items(body: Mapping[str, Any], file: str, index: int) -> list[RawDocument]:
    items = body.get("items")
    if items is None:
        return []
    if not isinstance(items, list):
        place = ErrorPlace(file=file, index=index, kind="List")
        raise ManifestErrors([ManifestError(place, "items", f"must be a list, got {describe(items)}")])
    return [RawDocument(Source(file, index, item), entry) for item, entry in enumerate(items)]
