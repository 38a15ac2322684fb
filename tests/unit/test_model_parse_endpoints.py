"""Parsing EndpointSlices, and converting legacy v1 Endpoints into EndpointSlices."""

from __future__ import annotations

import pytest
from model_helpers import FILE, parse, parse_one, single_error

from kubeplane.model.objects import (
    SERVICE_NAME_LABEL,
    Endpoint,
    EndpointConditions,
    EndpointHints,
    EndpointPort,
    EndpointSlice,
    ObjectReference,
)

FULL_SLICE = f"""
apiVersion: discovery.k8s.io/v1
kind: EndpointSlice
metadata:
  name: ext-abc
  namespace: shop
  labels: {{{SERVICE_NAME_LABEL}: ext}}
addressType: IPv4
endpoints:
  - addresses: [10.1.0.5]
    conditions: {{ready: true, serving: true, terminating: false}}
    hostname: ext-0
    nodeName: node-a
    zone: zone-a
    hints: {{forZones: [{{name: zone-a}}], forNodes: [{{name: node-a}}]}}
    targetRef: {{kind: Pod, name: ext-0, namespace: shop, uid: 1234}}
  - addresses: [10.1.0.6]
ports:
  - {{name: http, port: 8080, protocol: TCP, appProtocol: http}}
  - {{name: dns, port: 53, protocol: UDP}}
"""


def test_every_endpoint_slice_field_is_parsed() -> None:
    endpoint_slice = parse_one(FULL_SLICE)
    assert isinstance(endpoint_slice, EndpointSlice)
    assert endpoint_slice.service_name == "ext"
    assert endpoint_slice.address_type == "IPv4"
    assert endpoint_slice.endpoints == (
        Endpoint(
            addresses=("10.1.0.5",),
            conditions=EndpointConditions(ready=True, serving=True, terminating=False),
            hostname="ext-0",
            node_name="node-a",
            zone="zone-a",
            hints=EndpointHints(for_zones=("zone-a",), for_nodes=("node-a",)),
            target_ref=ObjectReference("Pod", "ext-0", "shop"),
        ),
        Endpoint(addresses=("10.1.0.6",)),
    )
    assert endpoint_slice.ports == (
        EndpointPort(8080, "TCP", "http", "http"),
        EndpointPort(53, "UDP", "dns"),
    )


def test_slice_without_service_name_label_warns() -> None:
    parsed = parse(FULL_SLICE.replace(f"labels: {{{SERVICE_NAME_LABEL}: ext}}", "labels: {}"))
    assert any(SERVICE_NAME_LABEL in w for w in parsed.warnings)


def _slice(body: str) -> str:
    head = "apiVersion: discovery.k8s.io/v1\nkind: EndpointSlice\n"
    return f"{head}metadata: {{name: s, namespace: shop}}\n{body}"


@pytest.mark.parametrize(
    ("body", "field", "message"),
    [
        ("endpoints: []", "addressType", "required field is missing"),
        ("addressType: IPv5", "addressType", "must be one of IPv4, IPv6, FQDN"),
        ("addressType: IPv4\nendpoints: [{addresses: []}]", "endpoints[0].addresses", "between 1 and 100"),
        (
            "addressType: IPv6\nendpoints: [{addresses: [10.0.0.1]}]",
            "endpoints[0].addresses[0]",
            "IPv6 address",
        ),
        ("addressType: IPv4\nports: [{port: 0}]", "ports[0].port", "must be between 1 and 65535, got 0"),
        ("addressType: IPv4\nports: [{name: a, port: 1}, {name: a, port: 2}]", "ports[1].name", "duplicate"),
        (
            "addressType: IPv4\nendpoints: [{addresses: [10.0.0.1], conditions: {ready: 1}}]",
            "endpoints[0].conditions.ready",
            "must be a boolean, got integer 1",
        ),
    ],
)
def test_invalid_endpoint_slice_field_names_file_object_and_field(
    body: str, field: str, message: str
) -> None:
    line = single_error(_slice(body))
    assert line.startswith(f"{FILE}#0 EndpointSlice shop/s: {field}: "), line
    assert message in line


def test_legacy_endpoints_become_slices_per_family_with_readiness() -> None:
    parsed = parse("""
        apiVersion: v1
        kind: Endpoints
        metadata: {name: ext, namespace: shop}
        subsets:
          - addresses:
              - {ip: 10.1.0.5, hostname: ext-0, nodeName: node-a, targetRef: {kind: Pod, name: ext-0}}
              - {ip: "fd00::5"}
            notReadyAddresses: [{ip: 10.1.0.6}]
            ports: [{name: http, port: 8080}]
    """)
    v4, v6 = parsed.objects
    assert isinstance(v4, EndpointSlice) and isinstance(v6, EndpointSlice)
    assert (v4.meta.key, v4.address_type, v4.service_name) == ("shop/ext-legacy", "IPv4", "ext")
    assert (v6.meta.key, v6.address_type) == ("shop/ext-legacy-ipv6", "IPv6")
    assert [(e.addresses, e.conditions.ready) for e in v4.endpoints] == [
        (("10.1.0.5",), True),
        (("10.1.0.6",), False),
    ]
    assert v4.endpoints[0].hostname == "ext-0" and v4.endpoints[0].node_name == "node-a"
    assert v4.ports == (EndpointPort(8080, "TCP", "http"),)


def test_legacy_endpoints_with_bad_ip_name_the_field() -> None:
    line = single_error("""
apiVersion: v1
kind: Endpoints
metadata: {name: ext}
subsets: [{addresses: [{ip: 10.1.0.500}]}]
""")
    assert line.startswith(f"{FILE}#0 Endpoints default/ext: subsets[0].addresses[0].ip: must be a valid IP")
