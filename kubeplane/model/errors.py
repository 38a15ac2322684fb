"""Manifest errors: every problem with user input becomes one line naming file, document, object and field.

The parser collects all problems of a run before raising (a user fixing a file wants every mistake at once),
so the raised exception is `ManifestErrors`, a tuple of single `ManifestError`s.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

from kubeplane.model.objects import Source


@dataclass(frozen=True)
class ErrorPlace:
    """Where an error points: file and document (or List item), and the object's kind and `ns/name` key."""

    file: str = ""
    index: int | None = None
    item: int | None = None
    kind: str = ""
    key: str = ""

    @classmethod
    def of(cls, source: Source | None, kind: str = "", key: str = "") -> ErrorPlace:
        if source is None:
            return cls(kind=kind, key=key)
        return cls(source.file, source.index, source.item, kind, key)

    def __str__(self) -> str:
        parts: list[str] = []
        if self.file:
            where = self.file if self.index is None else f"{self.file}#{self.index}"
            if self.item is not None:
                where += f".items[{self.item}]"
            parts.append(where)
        obj = " ".join(p for p in (self.kind, self.key) if p)
        if obj:
            parts.append(obj)
        return " ".join(parts)


class ManifestError(Exception):
    """One problem in the manifests: `file#index Kind ns/name: field.path: what is wrong`."""

    def __init__(self, place: ErrorPlace, field: str, message: str) -> None:
        self.place = place
        self.field = field
        self.message = message
        super().__init__(str(self))

    @property
    def file(self) -> str:
        return self.place.file

    @property
    def index(self) -> int | None:
        return self.place.index

    @property
    def kind(self) -> str:
        return self.place.kind

    @property
    def key(self) -> str:
        return self.place.key

    def __str__(self) -> str:
        return ": ".join(p for p in (str(self.place), self.field, self.message) if p)

    def __repr__(self) -> str:
        return f"ManifestError({str(self)!r})"


class ManifestErrors(Exception):
    """All problems found in one load; `str()` is one line per error, in the order they were found."""

    def __init__(self, errors: Iterable[ManifestError]) -> None:
        self.errors: tuple[ManifestError, ...] = tuple(errors)
        super().__init__(str(self))

    def __str__(self) -> str:
        return "\n".join(str(e) for e in self.errors)


def raise_if_any(errors: Iterable[ManifestError]) -> None:
    """Raise `ManifestErrors` when `errors` is not empty."""
    collected = tuple(errors)
    if collected:
        raise ManifestErrors(collected)
