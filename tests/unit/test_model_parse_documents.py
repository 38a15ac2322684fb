"""Reading manifest files: multi-document YAML, `kind: List`, JSON, directories, and what is not YAML."""

from __future__ import annotations

import json
import random
from pathlib import Path

import pytest
import yaml
from model_helpers import FILE, parse, single_error

from kubeplane.model.complete import build_cluster
from kubeplane.model.errors import ManifestErrors
from kubeplane.model.objects import Namespace, Pod, Service
from kubeplane.model.parse import find_manifest_files, parse_file, parse_object, parse_text

NAMESPACE = "apiVersion: v1\nkind: Namespace\nmetadata: {name: shop}\n"
SERVICE = (
    "apiVersion: v1\nkind: Service\nmetadata: {name: web, namespace: shop}\nspec: {ports: [{port: 80}]}\n"
)


def test_multi_document_yaml_gives_every_object_with_its_document_index() -> None:
    parsed = parse(NAMESPACE + "---\n---\n" + SERVICE)
    kinds = [type(o) for o in parsed.objects]
    assert kinds == [Namespace, Service]
    assert [str(o.meta.source) for o in parsed.objects] == [f"{FILE}#0", f"{FILE}#2"]


def test_list_kind_is_expanded_and_items_are_located_by_index() -> None:
    text = yaml.safe_dump(
        {"apiVersion": "v1", "kind": "List", "items": [yaml.safe_load(NAMESPACE), {"kind": 5}]}
    )
    with pytest.raises(ManifestErrors) as caught:
        parse(text)
    assert str(caught.value).startswith(f"{FILE}#0.items[1]")
    text = yaml.safe_dump({"apiVersion": "v1", "kind": "List", "items": [yaml.safe_load(NAMESPACE)]})
    (namespace,) = parse(text).objects
    assert isinstance(namespace, Namespace) and str(namespace.meta.source) == f"{FILE}#0.items[0]"


def test_json_manifest_is_read(tmp_path: Path) -> None:
    path = tmp_path / "svc.json"
    path.write_text(json.dumps(yaml.safe_load(SERVICE)))
    (service,) = parse_file(path).objects
    assert isinstance(service, Service) and service.meta.key == "shop/web"


def test_invalid_json_is_one_line_with_file_and_line(tmp_path: Path) -> None:
    path = tmp_path / "bad.json"
    path.write_text('{\n  "kind": "Service",\n  oops\n}')
    with pytest.raises(ManifestErrors) as caught:
        parse_file(path)
    assert str(caught.value).startswith(f"{path}#0: line 3: invalid JSON: ")


def test_yaml_syntax_error_is_one_line_with_file_and_line() -> None:
    with pytest.raises(ManifestErrors) as caught:
        parse_text("kind: Service\nmetadata:\n  name: [unclosed\n", "bad.yaml")
    (error,) = caught.value.errors
    assert str(error).startswith("bad.yaml: line ")
    assert "invalid YAML" in str(error) and "\n" not in str(error)


def test_timestamps_stay_strings() -> None:
    (pod,) = parse("""
        apiVersion: v1
        kind: Pod
        metadata: {name: p, deletionTimestamp: 2024-05-01T10:00:00Z}
        spec: {containers: [{name: c}]}
    """).objects
    assert isinstance(pod, Pod) and pod.meta.deletion_timestamp == "2024-05-01T10:00:00Z"


def test_unknown_kind_is_an_error_naming_it() -> None:
    line = single_error("apiVersion: apps/v1\nkind: Deployment\nmetadata: {name: web, namespace: shop}\n")
    assert line.startswith(f"{FILE}#0 Deployment shop/web: kind: unknown kind 'Deployment'")


def test_wrong_api_version_for_a_kind_is_an_error() -> None:
    line = single_error("apiVersion: discovery.k8s.io/v1beta1\nkind: EndpointSlice\nmetadata: {name: x}\n")
    assert "apiVersion: EndpointSlice must be discovery.k8s.io/v1, got 'discovery.k8s.io/v1beta1'" in line


def test_document_that_is_not_a_mapping_is_an_error() -> None:
    assert single_error("- just\n- a list\n") == f"{FILE}#0: a manifest must be a mapping, got a list"


def test_missing_kind_and_metadata_name_are_errors() -> None:
    assert "kind: required field is missing" in single_error("apiVersion: v1\nmetadata: {name: x}\n")
    assert "metadata: required field is missing" in single_error("apiVersion: v1\nkind: Namespace\n")
    assert "metadata.name: required field is missing" in single_error(
        "apiVersion: v1\nkind: Node\nmetadata: {}\n"
    )


def test_unknown_top_level_field_is_a_warning() -> None:
    parsed = parse(NAMESPACE + "extra: 1\n")
    assert parsed.warnings == (f"{FILE}#0 Namespace shop: extra: unknown field, ignored",)


def test_errors_of_all_documents_are_collected() -> None:
    bad = SERVICE.replace("80", "0")
    with pytest.raises(ManifestErrors) as caught:
        parse(bad + "---\n" + bad)
    assert [e.index for e in caught.value.errors] == [0, 1]


def test_directories_are_searched_recursively_in_sorted_order(tmp_path: Path) -> None:
    (tmp_path / "b").mkdir()
    (tmp_path / ".hidden").mkdir()
    for name in ("b/z.yml", "a.yaml", "c.json", "notes.txt", ".hidden/x.yaml"):
        (tmp_path / name).write_text("{}")
    found = find_manifest_files([tmp_path])
    assert found == [tmp_path / "a.yaml", tmp_path / "b/z.yml", tmp_path / "c.json"]


def test_missing_path_and_empty_directory_are_errors(tmp_path: Path) -> None:
    with pytest.raises(ManifestErrors) as caught:
        find_manifest_files([tmp_path / "nope", tmp_path])
    assert [str(e) for e in caught.value.errors] == [
        f"{tmp_path / 'nope'}: no such file or directory",
        f"{tmp_path}: no *.yaml, *.yml or *.json files in it",
    ]


def test_unreadable_file_is_an_error_not_a_traceback(tmp_path: Path) -> None:
    path = tmp_path / "binary.yaml"
    path.write_bytes(b"\xff\xfe\x00bad")
    with pytest.raises(ManifestErrors) as caught:
        parse_file(path)
    assert str(caught.value).startswith(f"{path}: cannot read")


def test_parse_object_reads_one_api_object() -> None:
    service = parse_object(yaml.safe_load(SERVICE), file="https://api/services")
    assert isinstance(service, Service) and service.meta.source is not None
    assert service.meta.source.file == "https://api/services"


def _mutations(value: object, rng: random.Random) -> object:
    """`value` with one random leaf replaced by a value of another type."""
    if isinstance(value, dict) and value:
        key = rng.choice(sorted(value, key=str))
        return {**value, key: _mutations(value[key], rng)}
    if isinstance(value, list) and value:
        i = rng.randrange(len(value))
        return [*value[:i], _mutations(value[i], rng), *value[i + 1 :]]
    return rng.choice([None, 0, -1, 99999, "", "x y", [], {}, [1], {"a": [None]}, True, 1.5])


def test_randomly_broken_manifests_give_one_line_errors_never_tracebacks() -> None:
    examples = Path(__file__).parents[2] / "examples"
    documents = [
        doc for path in sorted(examples.rglob("*.yaml")) for doc in yaml.safe_load_all(path.read_text())
    ]
    others = [obj for path in sorted((examples / "shop").glob("*.yaml")) for obj in parse_file(path).objects]
    rng = random.Random(7)
    for _ in range(400):
        broken = rng.choice(documents)
        for _ in range(rng.randint(1, 3)):
            broken = _mutations(broken, rng)
        try:
            parsed = parse_text(yaml.safe_dump(broken), "fuzz.yaml")
            taken = {(type(o), o.meta.key) for o in parsed.objects}
            build_cluster([*parsed.objects, *(o for o in others if (type(o), o.meta.key) not in taken)])
        except ManifestErrors as err:
            assert all("\n" not in str(e) for e in err.errors)


def test_yaml_flow_mapping_is_not_mistaken_for_json() -> None:
    (namespace,) = parse("{apiVersion: v1, kind: Namespace, metadata: {name: shop}}").objects
    assert isinstance(namespace, Namespace)
