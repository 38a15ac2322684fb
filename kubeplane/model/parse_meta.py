"""`metadata` of every kind: name, namespace, labels, annotations, deletionTimestamp, in the API's formats."""

from __future__ import annotations

from collections.abc import Callable

from kubeplane.model.fields import Fields
from kubeplane.model.formats import dns1123_label_problem, dns1123_subdomain_problem
from kubeplane.model.objects import ObjectMeta, Source

DEFAULT_NAMESPACE = "default"

# Metadata the API server maintains; present in objects read back from a cluster, meaningless to kubeplane.
_SERVER_METADATA = (
    "uid",
    "resourceVersion",
    "creationTimestamp",
    "generation",
    "managedFields",
    "ownerReferences",
    "finalizers",
    "generateName",
    "selfLink",
    "deletionGracePeriodSeconds",
)


def read_meta(
    doc: Fields,
    source: Source,
    namespaced: bool,
    name_problem: Callable[[str], str | None] = dns1123_subdomain_problem,
    default_name: str = "",
) -> ObjectMeta:
    """The object's metadata; `default_name` makes `metadata.name` optional (config kinds)."""
    meta = doc.sub("metadata")
    if meta is None:
        if not default_name:
            doc.error("metadata", "required field is missing")
        return ObjectMeta(name=default_name, namespace=DEFAULT_NAMESPACE if namespaced else "", source=source)
    meta.ignore(*_SERVER_METADATA)
    name = meta.checked("name", name_problem, required=not default_name) or default_name
    namespace = meta.checked("namespace", dns1123_label_problem) or ""
    if namespaced:
        namespace = namespace or DEFAULT_NAMESPACE
    elif namespace:
        meta.warn("namespace", "ignored: this kind is not namespaced")
        namespace = ""
    labels = meta.string_map("labels", check_labels=True)
    annotations = meta.string_map("annotations")
    deletion_timestamp = meta.text("deletionTimestamp")
    meta.finish()
    return ObjectMeta(
        name=name,
        namespace=namespace,
        labels=labels,
        annotations=annotations,
        deletion_timestamp=deletion_timestamp,
        source=source,
    )
