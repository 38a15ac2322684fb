"""Load manifests from paths into a complete `Cluster`: find files, parse, complete, derive EndpointSlices.

This is the one call the CLI and the one-shot manifest source make. Every file is parsed before anything is
raised, so the `ManifestErrors` of a failed load lists the problems of all files at once.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, replace
from pathlib import Path

from kubeplane.endpoints import derive_endpoint_slices
from kubeplane.model.complete import build_cluster
from kubeplane.model.errors import ManifestError, ManifestErrors, raise_if_any
from kubeplane.model.objects import Cluster, KubeObject
from kubeplane.model.parse import find_manifest_files, parse_file


@dataclass(frozen=True)
class LoadedCluster:
    """A completed snapshot, the warnings met on the way (unknown fields...) and the files it came from."""

    cluster: Cluster
    warnings: tuple[str, ...]
    files: tuple[Path, ...]


def load_cluster(paths: Sequence[Path], previous: Cluster | None = None) -> LoadedCluster:
    """Everything under `paths` as one Cluster, derived EndpointSlices included; raises `ManifestErrors`.

    `previous` keeps allocations (clusterIPs, nodePorts, pod placement and IPs) sticky across reloads.
    """
    files = find_manifest_files(paths)
    objects: list[KubeObject] = []
    warnings: list[str] = []
    errors: list[ManifestError] = []
    for file in files:
        try:
            parsed = parse_file(file)
        except ManifestErrors as err:
            errors.extend(err.errors)
            continue
        objects.extend(parsed.objects)
        warnings.extend(parsed.warnings)
    raise_if_any(errors)
    cluster = build_cluster(objects, previous)
    cluster = replace(cluster, endpoint_slices=cluster.endpoint_slices + derive_endpoint_slices(cluster))
    return LoadedCluster(cluster, tuple(warnings), tuple(files))
