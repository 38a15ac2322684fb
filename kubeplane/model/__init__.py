"""Kubernetes objects: parsing and validation into frozen dataclasses (see objects.py)."""
