"""PublishCatalog: immutable versions from TOML or JSON; holds keep their priced version.

Every document published here is the default catalog plus an operation of the test's own, so
the current catalog stays what every other test expects.
"""

from __future__ import annotations

import json
import tomllib
import uuid
from typing import Any

import grpc

from meter.catalog.defaults import default_catalog_document
from meterpb.v1 import catalog_pb2 as cpb
from meterpb.v1 import meter_pb2 as pb
from tests.support import balance, fails, grant, rid


def own_operation() -> str:
    return f"test.op-{uuid.uuid4().hex[:10]}"


def toml_with(operation: str, low: int, high: int) -> str:
    return (
        default_catalog_document()
        + f'\n[operations."{operation}"]\nmin = {low}\nmax = {high}\nunit = "item"\n'
    )


def json_with(operation: str, low: int, high: int) -> str:
    doc = tomllib.loads(default_catalog_document())
    doc["operations"][operation] = {"min": low, "max": high, "unit": "item"}
    return json.dumps(doc)


async def publish(catalog: Any, document: str, fmt: int = 0, **kw: Any) -> Any:
    return await catalog.PublishCatalog(
        cpb.PublishCatalogRequest(document=document, format=fmt, **kw)
    )


async def test_a_toml_document_becomes_a_new_immutable_version(catalog):
    op = own_operation()
    v1 = await publish(catalog, toml_with(op, 2, 4), cpb.DOCUMENT_FORMAT_TOML)
    v2 = await publish(catalog, toml_with(op, 10, 20))

    assert v2.catalog_version > v1.catalog_version
    old = await catalog.GetOperation(
        cpb.GetOperationRequest(operation=op, catalog_version=v1.catalog_version)
    )
    current = await catalog.GetOperation(cpb.GetOperationRequest(operation=op))
    assert (2, 4, v1.catalog_version) == (old.min, old.max, old.catalog_version)
    assert (10, 20, v2.catalog_version) == (current.min, current.max, current.catalog_version)


async def test_a_json_document_is_published_too(catalog):
    op = own_operation()
    got = await publish(catalog, json_with(op, 1, 7), cpb.DOCUMENT_FORMAT_JSON)

    (rule,) = [o for o in got.operations if o.operation == op]
    assert (1, 7, cpb.COST_UNIT_ITEM) == (rule.min, rule.max, rule.unit)
    listed = await catalog.ListOperations(cpb.ListOperationsRequest())
    assert got.catalog_version == listed.catalog_version


async def test_a_bad_document_is_refused_naming_the_rule_and_field_and_changes_nothing(catalog, db):
    current = await catalog.ListOperations(cpb.ListOperationsRequest())
    versions = db.scalar("SELECT count(*) FROM catalog_versions")
    op = own_operation()

    f = await fails(publish(catalog, toml_with(op, 5, 2)))

    assert (grpc.StatusCode.INVALID_ARGUMENT, "INVALID_CATALOG") == (f.code, f.reason)
    assert [f'operations["{op}"].max'] == f.fields
    assert op in f.message
    assert "max" in f.message
    assert versions == db.scalar("SELECT count(*) FROM catalog_versions")
    after = await catalog.ListOperations(cpb.ListOperationsRequest())
    assert current.catalog_version == after.catalog_version


async def test_a_document_that_is_not_toml_is_refused_naming_the_document(catalog):
    f = await fails(publish(catalog, "[operations\nmin = ", cpb.DOCUMENT_FORMAT_TOML))
    assert (grpc.StatusCode.INVALID_ARGUMENT, ["document"]) == (f.code, f.fields)


async def test_a_publication_replayed_with_its_request_id_makes_no_new_version(catalog):
    op = own_operation()
    request_id = rid("publish")
    first = await publish(catalog, toml_with(op, 1, 2), request_id=request_id)
    again = await publish(catalog, toml_with(op, 1, 2), request_id=request_id)
    other = await fails(publish(catalog, toml_with(op, 1, 3), request_id=request_id))

    assert first.catalog_version == again.catalog_version
    assert (grpc.StatusCode.INVALID_ARGUMENT, "REQUEST_ID_REUSED") == (other.code, other.reason)


async def test_a_hold_is_committed_with_the_catalog_version_it_was_priced_with(stub, catalog, ws):
    op = own_operation()
    v1 = await publish(catalog, toml_with(op, 2, 4))
    await grant(stub, ws, 100)
    job = rid()
    held = await stub.Reserve(
        pb.ReserveRequest(
            workspace_id=ws,
            request_id=job,
            operation=op,
            usage=pb.Usage(complexity=pb.COMPLEXITY_COMPLEX, items=2),
        )
    )
    assert (8, v1.catalog_version) == (held.hold.amount, held.hold.catalog_version)

    await publish(catalog, toml_with(op, 10, 20))
    done = await stub.Commit(
        pb.CommitRequest(
            workspace_id=ws,
            request_id=job,
            usage=pb.Usage(complexity=pb.COMPLEXITY_STANDARD, items=2),
        )
    )

    assert (6, 2) == (done.charged, done.released)  # 2 items at 3 (v1), not at 15 (v2)
    assert 94 == (await balance(stub, ws)).available
    new = await stub.Charge(
        pb.ChargeRequest(
            workspace_id=ws,
            request_id=rid(),
            operation=op,
            usage=pb.Usage(complexity=pb.COMPLEXITY_SIMPLE, items=1),
        )
    )
    assert 10 == new.charged  # a new job prices with the newest version
