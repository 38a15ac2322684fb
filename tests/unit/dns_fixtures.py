"""The small shop cluster the DNS fast-path, server and incremental tests share, and wire helpers.

`web` is a ClusterIP service with a named port, `db` a headless one whose endpoint count a test chooses (60
make its answer too big for plain UDP), `ext` an ExternalName pointing out of the cluster.
"""

from __future__ import annotations

import dns.flags
import dns.message

from kubeplane.dns.answers import AnswerTable
from kubeplane.dns.wire import parse_question
from kubeplane.model.objects import (
    SERVICE_NAME_LABEL,
    Cluster,
    Endpoint,
    EndpointPort,
    EndpointSlice,
    ObjectMeta,
    Service,
    ServicePort,
)

WEB = Service(ObjectMeta("web", "shop"), cluster_ips=("10.96.0.20",), ports=(ServicePort(80, name="http"),))
DB = Service(ObjectMeta("db", "shop"), headless=True, ports=(ServicePort(5432, name="pg"),))
EXT = Service(ObjectMeta("ext", "shop"), type="ExternalName", external_name="www.example.com")


def db_slice(count: int) -> EndpointSlice:
    """The `db` service's slice with `count` ready endpoints 10.244.1.1, 10.244.1.2, ..."""
    endpoints = tuple(Endpoint((f"10.244.{1 + i // 250}.{1 + i % 250}",)) for i in range(count))
    meta = ObjectMeta("db-1", "shop", labels={SERVICE_NAME_LABEL: "db"})
    return EndpointSlice(meta, endpoints=endpoints, ports=(EndpointPort(5432, name="pg"),))


def shop_cluster(db_endpoints: int = 3) -> Cluster:
    return Cluster(services=(WEB, DB, EXT), endpoint_slices=(db_slice(db_endpoints),))


def query_wire(
    name: str, rdtype: str = "A", *, edns: int = -1, payload: int = 1232, flags: int = 0, do: bool = False
) -> bytes:
    """A query as dnspython writes it, id 0xBEEF, header `flags`; `edns` 0 adds an OPT record, `do` one
    with the DO bit set."""
    edns = 0 if do and edns < 0 else edns
    message = dns.message.make_query(name, rdtype, use_edns=edns, payload=payload, want_dnssec=do)
    message.flags = dns.flags.Flag(flags)
    message.id = 0xBEEF
    return message.to_wire()


def table_wire(table: AnswerTable, query: bytes, via_tcp: bool = False) -> bytes | None:
    """The table's response to `query`, packing and remembering it first when it is not there yet (as the
    server's slow path does); None when the question is not the table's to answer."""
    hit = table.answer(query, via_tcp)
    if hit is None:
        question = parse_question(query)
        assert question is not None
        computed = table.compute(question)
        if computed is None or computed.template is None:
            return None
        hit = table.answer(query, via_tcp)
        assert hit is not None
    return hit[0]
