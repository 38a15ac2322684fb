"""Kubernetes objects: parsing and validation into frozen dataclasses (see objects.py).

Entry points: `parse.parse_text` / `parse_file` / `parse_object` (manifests to objects, `ManifestErrors` on
bad input), `complete.build_cluster` (objects to a completed `Cluster`), `serialize.to_manifest` (back to
Kubernetes-shaped dicts). `kubeplane.loader.load_cluster` chains them for paths on disk.
"""
