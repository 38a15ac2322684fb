"""Typed field readers over one parsed YAML/JSON document, producing errors that carry the field path.

A `Fields` wraps one mapping at a path (`spec.ports[0]`). Every read names the field, checks its type and
records that it was seen; `finish()` turns the keys nobody read into warnings, which is how unknown fields
become warnings instead of crashes. Readers never raise: a wrong value is reported to the document's
`Report` and the reader returns the default, so one pass finds every problem in a document.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, TypeVar, cast

from kubeplane.model.errors import ErrorPlace, ManifestError
from kubeplane.model.formats import (
    IPAddress,
    IPNetwork,
    label_key_problem,
    label_value_problem,
    parse_cidr,
    parse_duration,
    parse_ip,
)

E = TypeVar("E", bound=str)


def describe(value: object) -> str:
    """A short phrase for a wrong value in an error: `integer 70000`, `list`, `string "x"`."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return f"boolean {str(value).lower()}"
    if isinstance(value, int | float):
        return f"{'integer' if isinstance(value, int) else 'number'} {value}"
    if isinstance(value, str):
        return f"string {value!r}"
    if isinstance(value, Mapping):
        return "a mapping"
    if isinstance(value, list | tuple):
        return "a list"
    return type(value).__name__


@dataclass
class Report:
    """Problems found in one document; the place gains kind and key once the metadata is read."""

    place: ErrorPlace
    errors: list[ManifestError] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)

    def error(self, path: str, message: str) -> None:
        self.errors.append(ManifestError(self.place, path, message))

    def warn(self, path: str, message: str) -> None:
        self.warnings.append(str(ManifestError(self.place, path, message)))


class Fields:
    """One mapping of a document, read field by field."""

    def __init__(self, data: Mapping[str, Any], path: str, report: Report) -> None:
        self._data = data
        self._path = path
        self._seen: set[str] = set()
        self.report = report

    def path_of(self, name: str) -> str:
        return f"{self._path}.{name}" if self._path else name

    def has(self, name: str) -> bool:
        return self._data.get(name) is not None

    def error(self, name: str, message: str) -> None:
        self.report.error(self.path_of(name) if name else self._path, message)

    def warn(self, name: str, message: str) -> None:
        self.report.warn(self.path_of(name) if name else self._path, message)

    def ignore(self, *names: str) -> None:
        """Known fields that kubeplane has no use for: accepted without a warning."""
        self._seen.update(names)

    def finish(self) -> None:
        for name in self._data:
            if name not in self._seen:
                self.report.warn(self.path_of(str(name)), "unknown field, ignored")

    def raw(self, name: str) -> Any:
        self._seen.add(name)
        return self._data.get(name)

    def _typed(self, name: str, check: Callable[[Any], bool], want: str, required: bool) -> Any:
        value = self.raw(name)
        if value is None:
            if required:
                self.error(name, "required field is missing")
            return None
        if not check(value):
            self.error(name, f"must be {want}, got {describe(value)}")
            return None
        return value

    def text(self, name: str, required: bool = False) -> str | None:
        value: str | None = self._typed(name, lambda v: isinstance(v, str), "a string", required)
        if required and value == "":
            self.error(name, "required field is empty")
            return None
        return value

    def integer(self, name: str, required: bool = False) -> int | None:
        value: int | None = self._typed(
            name, lambda v: isinstance(v, int) and not isinstance(v, bool), "an integer", required
        )
        return value

    def flag(self, name: str) -> bool | None:
        value: bool | None = self._typed(name, lambda v: isinstance(v, bool), "a boolean", False)
        return value

    def int_in(self, name: str, low: int, high: int, required: bool = False) -> int | None:
        value = self.integer(name, required)
        if value is not None and not low <= value <= high:
            self.error(name, f"must be between {low} and {high}, got {value}")
            return None
        return value

    def port(self, name: str, required: bool = False) -> int | None:
        return self.int_in(name, 1, 65535, required)

    def enum(self, name: str, allowed: tuple[E, ...], required: bool = False) -> E | None:
        value = self.text(name, required)
        if value is None:
            return None
        if value not in allowed:
            self.error(name, f"must be one of {', '.join(allowed)}, got {value!r}")
            return None
        return cast(E, value)

    def checked(self, name: str, problem: Callable[[str], str | None], required: bool = False) -> str | None:
        """A string that must pass `problem` (which explains what is wrong, or returns None)."""
        value = self.text(name, required)
        if value is None:
            return None
        wrong = problem(value)
        if wrong:
            self.error(name, wrong)
            return None
        return value

    def ip(self, name: str) -> IPAddress | None:
        value = self.text(name)
        return None if value is None else self.parse_address(name, value)

    def parse_address(self, name: str, text: str) -> IPAddress | None:
        """`text` (read by the caller, e.g. from a list) as an IP address, errors reported at `name`."""
        return self._address(self.path_of(name), text)

    def duration(self, name: str) -> float | None:
        value = self.text(name)
        if value is None:
            return None
        seconds = parse_duration(value)
        if isinstance(seconds, str):
            self.error(name, seconds)
            return None
        return seconds

    def _address(self, path: str, text: str) -> IPAddress | None:
        address = parse_ip(text)
        if isinstance(address, str):
            self.report.error(path, address)
            return None
        return address

    def seq(self, name: str) -> list[Any]:
        value = self._typed(name, lambda v: isinstance(v, list), "a list", False)
        return list(value) if value is not None else []

    def texts(self, name: str) -> list[tuple[str, str]]:
        """Each string item with its path (`spec.externalIPs[1]`); non-strings are reported and skipped."""
        items: list[tuple[str, str]] = []
        for i, item in enumerate(self.seq(name)):
            path = f"{self.path_of(name)}[{i}]"
            if isinstance(item, str):
                items.append((path, item))
            else:
                self.report.error(path, f"must be a string, got {describe(item)}")
        return items

    def ip_list(self, name: str) -> tuple[IPAddress, ...]:
        found: list[IPAddress] = []
        for path, text in self.texts(name):
            address = self._address(path, text)
            if address is not None:
                found.append(address)
        return tuple(found)

    def cidr_list(self, name: str, strict: bool = True) -> tuple[IPNetwork, ...]:
        """CIDRs; `strict` refuses host bits (10.0.0.1/8), as ServiceCIDR does; otherwise they are masked."""
        found: list[IPNetwork] = []
        for path, text in self.texts(name):
            network = parse_cidr(text, strict)
            if isinstance(network, str):
                self.report.error(path, network)
            else:
                found.append(network)
        return tuple(found)

    def sub(self, name: str) -> Fields | None:
        value = self._typed(name, lambda v: isinstance(v, Mapping), "a mapping", False)
        return Fields(value, self.path_of(name), self.report) if value is not None else None

    def section(self, name: str) -> Fields:
        """Like `sub`, but an absent (or wrong) section reads as empty, so callers read defaults from it."""
        return self.sub(name) or Fields({}, self.path_of(name), self.report)

    def subs(self, name: str) -> list[Fields]:
        """The mapping items of a list field; other items are reported and skipped."""
        found: list[Fields] = []
        for i, item in enumerate(self.seq(name)):
            path = f"{self.path_of(name)}[{i}]"
            if isinstance(item, Mapping):
                found.append(Fields(item, path, self.report))
            else:
                self.report.error(path, f"must be a mapping, got {describe(item)}")
        return found

    def string_map(self, name: str, check_labels: bool = False) -> dict[str, str]:
        """A string-to-string mapping (labels, annotations, selector); bad entries are reported, dropped."""
        value = self._typed(name, lambda v: isinstance(v, Mapping), "a mapping", False)
        result: dict[str, str] = {}
        for key, item in (value or {}).items():
            path = f"{self.path_of(name)}.{key}"
            if not isinstance(item, str):
                self.report.error(path, f"must be a string, got {describe(item)} (quote it)")
                continue
            problem = (label_key_problem(str(key)) or label_value_problem(item)) if check_labels else None
            if problem:
                self.report.error(path, problem)
                continue
            result[str(key)] = item
        return result
