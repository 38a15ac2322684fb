"""Manifests in, frozen objects out: the entry points of the model's parser.

`parse_text` / `parse_file` read every document of a file and raise `ManifestErrors` with all problems found
in it; warnings (unknown fields, ignored settings) come back with the objects. `parse_object` is the
one-object entry the API-server source uses. Kinds kubeplane accepts are exactly those in `KINDS`.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from kubeplane.model.errors import ErrorPlace, ManifestError, ManifestErrors
from kubeplane.model.fields import Fields, Report, describe
from kubeplane.model.formats import dns1035_label_problem, dns1123_label_problem, dns1123_subdomain_problem
from kubeplane.model.objects import KubeObject, ObjectMeta, Source
from kubeplane.model.parse_config import parse_kube_proxy_configuration, parse_kubeplane_configuration
from kubeplane.model.parse_endpoints import parse_endpoint_slice, parse_legacy_endpoints
from kubeplane.model.parse_meta import DEFAULT_NAMESPACE, read_meta
from kubeplane.model.parse_node import parse_namespace, parse_node, parse_service_cidr
from kubeplane.model.parse_pod import parse_pod
from kubeplane.model.parse_service import parse_service
from kubeplane.model.yaml_docs import RawDocument, split_documents

MANIFEST_SUFFIXES = (".yaml", ".yml", ".json")

KindParser = Callable[[Fields, ObjectMeta], tuple[KubeObject, ...]]


@dataclass(frozen=True)
class KindSpec:
    """How to read one kind: accepted apiVersions, scope, name format, and the body parser."""

    api_versions: tuple[str, ...]
    namespaced: bool
    parse: KindParser
    name_problem: Callable[[str], str | None] = dns1123_subdomain_problem
    default_name: str = ""  # non-empty: metadata is optional (configuration kinds)


KINDS: dict[str, KindSpec] = {
    "Service": KindSpec(("v1",), True, parse_service, dns1035_label_problem),
    "EndpointSlice": KindSpec(("discovery.k8s.io/v1",), True, parse_endpoint_slice),
    "Endpoints": KindSpec(("v1",), True, parse_legacy_endpoints),
    "Pod": KindSpec(("v1",), True, parse_pod),
    "Node": KindSpec(("v1",), False, parse_node),
    "Namespace": KindSpec(("v1",), False, parse_namespace, dns1123_label_problem),
    "ServiceCIDR": KindSpec(("networking.k8s.io/v1", "networking.k8s.io/v1beta1"), False, parse_service_cidr),
    "KubeProxyConfiguration": KindSpec(
        ("kubeproxy.config.k8s.io/v1alpha1",),
        False,
        parse_kube_proxy_configuration,
        default_name="kube-proxy",
    ),
    "KubeplaneConfiguration": KindSpec(
        ("kubeplane.dev/v1alpha1",), False, parse_kubeplane_configuration, default_name="kubeplane"
    ),
}


@dataclass(frozen=True)
class ParsedFile:
    """The objects of one file (legacy Endpoints already converted to EndpointSlices) and its warnings."""

    objects: tuple[KubeObject, ...]
    warnings: tuple[str, ...]


def parse_text(text: str, file: str) -> ParsedFile:
    """Every object in `text` (`file` names it in messages); raises `ManifestErrors` with all problems."""
    objects: list[KubeObject] = []
    warnings: list[str] = []
    errors: list[ManifestError] = []
    for document in split_documents(text, file):
        try:
            parsed = parse_document(document)
        except ManifestErrors as err:
            errors.extend(err.errors)
            continue
        objects.extend(parsed.objects)
        warnings.extend(parsed.warnings)
    if errors:
        raise ManifestErrors(errors)
    return ParsedFile(tuple(objects), tuple(warnings))


def parse_file(path: Path) -> ParsedFile:
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as err:
        reason = err.strerror if isinstance(err, OSError) and err.strerror else str(err)
        raise ManifestErrors(
            [ManifestError(ErrorPlace(file=str(path)), "", f"cannot read: {reason}")]
        ) from None
    return parse_text(text, str(path))


def parse_object(body: Mapping[str, Any], file: str = "<api>") -> KubeObject:
    """One object (as the API server returns it); raises `ManifestErrors`, warnings are dropped.

    Legacy Endpoints may yield several slices, so they are refused here: use `parse_document` for them.
    """
    parsed = parse_document(RawDocument(Source(file, 0), body))
    if len(parsed.objects) != 1:
        kind = str(body.get("kind", ""))
        place = ErrorPlace(file=file, index=0, kind=kind)
        raise ManifestErrors([ManifestError(place, "", f"gives {len(parsed.objects)} objects, expected one")])
    return parsed.objects[0]


def parse_document(document: RawDocument) -> ParsedFile:
    """One document's objects and warnings; raises `ManifestErrors` with every problem in it."""
    source = document.source
    report = Report(ErrorPlace.of(source))
    if not isinstance(document.body, Mapping):
        report.error("", f"a manifest must be a mapping, got {describe(document.body)}")
        raise ManifestErrors(report.errors)
    doc = Fields(document.body, "", report)
    kind = doc.text("kind", required=True)
    api_version = doc.text("apiVersion", required=True)
    spec = KINDS.get(kind or "")
    report.place = ErrorPlace.of(source, kind or "", _raw_key(document.body, spec))
    if kind and spec is None:
        accepted = ", ".join(KINDS)
        report.error("kind", f"unknown kind {kind!r} (kubeplane reads {accepted})")
    elif spec is not None and api_version and api_version not in spec.api_versions:
        report.error("apiVersion", f"{kind} must be {' or '.join(spec.api_versions)}, got {api_version!r}")
    if spec is None or report.errors:
        raise ManifestErrors(report.errors)
    meta = read_meta(doc, source, spec.namespaced, spec.name_problem, spec.default_name)
    objects = spec.parse(doc, meta)
    doc.finish()
    if report.errors:
        raise ManifestErrors(report.errors)
    return ParsedFile(objects, tuple(report.warnings))


def _raw_key(body: Mapping[str, Any], spec: KindSpec | None) -> str:
    """The object's `ns/name` as written, for error messages, before metadata is validated."""
    metadata = body.get("metadata")
    if not isinstance(metadata, Mapping):
        return spec.default_name if spec else ""
    name = metadata.get("name")
    namespace = metadata.get("namespace")
    name_text = name if isinstance(name, str) else (spec.default_name if spec else "")
    if spec is not None and not spec.namespaced:
        return name_text
    namespace_text = namespace if isinstance(namespace, str) and namespace else DEFAULT_NAMESPACE
    return f"{namespace_text}/{name_text}"


def find_manifest_files(paths: Sequence[Path]) -> list[Path]:
    """Files named directly, plus `*.yaml|*.yml|*.json` under directories (recursively, sorted, no dotfiles).

    Raises `ManifestErrors` for a path that does not exist or a directory without manifests.
    """
    found: list[Path] = []
    errors: list[ManifestError] = []
    for path in paths:
        if path.is_dir():
            below = sorted(
                p
                for p in path.rglob("*")
                if p.is_file()
                and p.suffix in MANIFEST_SUFFIXES
                and not any(part.startswith(".") for part in p.relative_to(path).parts)
            )
            if not below:
                errors.append(
                    ManifestError(ErrorPlace(file=str(path)), "", "no *.yaml, *.yml or *.json files in it")
                )
            found.extend(below)
        elif path.is_file():
            found.append(path)
        else:
            errors.append(ManifestError(ErrorPlace(file=str(path)), "", "no such file or directory"))
    if errors:
        raise ManifestErrors(errors)
    return list(dict.fromkeys(found))
