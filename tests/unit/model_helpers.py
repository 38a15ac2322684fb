"""Small helpers shared by the model tests: parse YAML text, collect error lines."""

from __future__ import annotations

import textwrap

import pytest

from kubeplane.model.errors import ManifestErrors
from kubeplane.model.objects import KubeObject
from kubeplane.model.parse import ParsedFile, parse_text

FILE = "manifests/test.yaml"


def parse(text: str) -> ParsedFile:
    return parse_text(textwrap.dedent(text), FILE)


def parse_one(text: str) -> KubeObject:
    parsed = parse(text)
    assert len(parsed.objects) == 1, parsed.objects
    return parsed.objects[0]


def error_lines(text: str) -> list[str]:
    with pytest.raises(ManifestErrors) as caught:
        parse(text)
    return [str(e) for e in caught.value.errors]


def single_error(text: str) -> str:
    lines = error_lines(text)
    assert len(lines) == 1, lines
    return lines[0]
