"""The one-line shape of manifest errors."""

from __future__ import annotations

from kubeplane.model.errors import ErrorPlace, ManifestError, ManifestErrors
from kubeplane.model.objects import Source


def test_error_line_names_file_document_object_field_and_problem() -> None:
    place = ErrorPlace.of(Source("examples/shop/web.yaml", 2), "Service", "shop/web")
    error = ManifestError(place, "spec.ports[0].port", "must be between 1 and 65535, got 70000")
    expected = (
        "examples/shop/web.yaml#2 Service shop/web: spec.ports[0].port: "
        + "must be between 1 and 65535, got 70000"
    )
    assert str(error) == expected
    assert (error.file, error.index, error.kind, error.key) == (
        "examples/shop/web.yaml",
        2,
        "Service",
        "shop/web",
    )


def test_list_items_and_missing_parts_are_left_out_cleanly() -> None:
    assert str(ManifestError(ErrorPlace.of(Source("a.yaml", 0, 3), "Pod", "x/p"), "", "bad")) == (
        "a.yaml#0.items[3] Pod x/p: bad"
    )
    assert str(ManifestError(ErrorPlace(file="dir"), "", "no such file or directory")) == (
        "dir: no such file or directory"
    )


def test_many_errors_print_one_per_line() -> None:
    errors = [ManifestError(ErrorPlace(file=f"{n}.yaml"), "", "bad") for n in "ab"]
    assert str(ManifestErrors(errors)) == "a.yaml: bad\nb.yaml: bad"
