"""DESIGN.md's error table: each bad input or refusal gets its status and changes nothing."""

from __future__ import annotations

import pytest
from google.protobuf import duration_pb2

from meterpb.v1 import meter_pb2 as pb
from tests.paths import refused
from tests.support import fails, grant, rid

LONG = "x" * 129


def _reserve(ws: str, **kw):
    fields = {"workspace_id": ws, "request_id": "job-1", "amount": 1, **kw}
    return pb.ReserveRequest(**fields)


BAD_RESERVES = {
    "empty request id": (_reserve, {"request_id": ""}, "request_id"),
    "over-long request id": (_reserve, {"request_id": LONG}, "request_id"),
    "ill-charactered request id": (_reserve, {"request_id": "job 1/é"}, "request_id"),
    "over-long actor": (_reserve, {"actor_id": LONG}, "actor_id"),
    "negative amount": (_reserve, {"amount": -1}, "amount"),
    "absurd amount": (_reserve, {"amount": 10**13}, "amount"),
    "too many labels": (_reserve, {"labels": {f"k{i}": "v" for i in range(17)}}, "labels"),
    "oversize label value": (_reserve, {"labels": {"k": "v" * 257}}, "labels['k']"),
    "bad label key": (_reserve, {"labels": {"Bad Key": "v"}}, "labels['Bad Key']"),
    "ttl too long": (_reserve, {"ttl": duration_pb2.Duration(seconds=86401)}, "ttl"),
    "negative ttl": (_reserve, {"ttl": duration_pb2.Duration(seconds=-5)}, "ttl"),
    "wait over ten minutes": (
        _reserve,
        {"wait_for_funds": duration_pb2.Duration(seconds=601)},
        "wait_for_funds",
    ),
    "unknown complexity": (
        lambda ws, **kw: pb.ReserveRequest(
            workspace_id=ws,
            request_id="job-1",
            operation="content.generate_post",
            usage=pb.Usage(complexity=42),
            **kw,
        ),
        {},
        "usage.complexity",
    ),
    "negative items": (
        lambda ws, **kw: pb.ReserveRequest(
            workspace_id=ws,
            request_id="job-1",
            operation="content.generate_post",
            usage=pb.Usage(items=-3),
            **kw,
        ),
        {},
        "usage.items",
    ),
    "neither operation nor amount": (
        lambda ws, **kw: pb.ReserveRequest(workspace_id=ws, request_id="job-1", **kw),
        {},
        "operation",
    ),
}


@pytest.mark.parametrize("case", BAD_RESERVES, ids=list(BAD_RESERVES))
async def test_a_malformed_reserve_is_invalid_names_the_field_and_changes_nothing(
    case, path, stub, ws, db
):
    make, fields, bad = BAD_RESERVES[case]
    await grant(stub, ws, 100)
    before = db.snapshot(ws)
    f = await refused(path.reserve(make(ws, **fields)))
    assert ("INVALID_ARGUMENT", "INVALID_ARGUMENT") == (f.code.name, f.reason)
    assert bad in f.fields
    assert before == db.snapshot(ws)


async def test_an_empty_workspace_id_is_invalid(path):
    f = await refused(path.reserve(pb.ReserveRequest(request_id="j", amount=1)))
    assert ("INVALID_ARGUMENT", ["workspace_id"]) == (f.code.name, f.fields)


async def test_an_unknown_workspace_is_not_found(path):
    f = await refused(
        path.reserve(pb.ReserveRequest(workspace_id="nobody-" + rid(), request_id="j", amount=1))
    )
    assert ("NOT_FOUND", "WORKSPACE_NOT_FOUND") == (f.code.name, f.reason)


async def test_an_unknown_operation_is_not_found_and_changes_nothing(path, stub, ws, db):
    await grant(stub, ws, 100)
    before = db.snapshot(ws)
    f = await refused(
        path.reserve(pb.ReserveRequest(workspace_id=ws, request_id=rid(), operation="no.such.op"))
    )
    assert ("NOT_FOUND", "OPERATION_NOT_FOUND") == (f.code.name, f.reason)
    assert before == db.snapshot(ws)


async def test_committing_an_unknown_hold_is_not_found(path, stub, ws):
    await grant(stub, ws, 100)
    f = await refused(path.commit(pb.CommitRequest(workspace_id=ws, request_id=rid(), amount=1)))
    assert ("NOT_FOUND", "HOLD_NOT_FOUND") == (f.code.name, f.reason)


async def test_insufficient_credits_says_what_was_required_and_which_package_covers_it(
    path, stub, ws, db
):
    await grant(stub, ws, 30)
    before = db.snapshot(ws)
    f = await refused(
        path.reserve(pb.ReserveRequest(workspace_id=ws, request_id=rid(), amount=200))
    )
    assert ("FAILED_PRECONDITION", "INSUFFICIENT_CREDITS") == (f.code.name, f.reason)
    assert {
        "required": "200",
        "available": "30",
        "shortfall": "170",
        "suggested_package": "Basic",
    } == f.metadata
    after = db.snapshot(ws)
    assert (before["holds"], before["journal"], before["lots"]) == (
        after["holds"],
        after["journal"],
        after["lots"],
    )


async def test_an_unknown_package_is_not_found_and_creates_no_workspace(stub, ws, db):
    f = await fails(
        stub.GrantCredits(
            pb.GrantCreditsRequest(workspace_id=ws, request_id=rid("pay"), package="Gigantic")
        )
    )
    assert ("NOT_FOUND", "PACKAGE_NOT_FOUND") == (f.code.name, f.reason)
    assert 0 == db.scalar("SELECT count(*) FROM workspaces WHERE workspace_id = :w", w=ws)


BAD_GRANTS = {
    "no amount nor package": ({}, "amount"),
    "amount and package": ({"amount": 5, "package": "Starter"}, "amount"),
    "negative amount": ({"amount": -5}, "amount"),
    "bad source": ({"amount": 5, "source": "Not A Source"}, "source"),
    "oversize labels": ({"amount": 5, "labels": {"k": "v" * 300}}, "labels['k']"),
}


@pytest.mark.parametrize("case", BAD_GRANTS, ids=list(BAD_GRANTS))
async def test_a_malformed_grant_is_invalid_and_creates_nothing(case, stub, ws, db):
    fields, bad = BAD_GRANTS[case]
    f = await fails(
        stub.GrantCredits(pb.GrantCreditsRequest(workspace_id=ws, request_id=rid("pay"), **fields))
    )
    assert ("INVALID_ARGUMENT", True) == (f.code.name, bad in f.fields)
    assert 0 == db.scalar("SELECT count(*) FROM workspaces WHERE workspace_id = :w", w=ws)


async def test_an_adjustment_needs_a_reason_and_a_non_zero_amount(stub, ws):
    await grant(stub, ws, 10)
    f = await fails(
        stub.AdjustCredits(
            pb.AdjustCreditsRequest(workspace_id=ws, request_id=rid(), amount=0, reason="")
        )
    )
    assert ("INVALID_ARGUMENT", {"amount", "reason"}) == (f.code.name, set(f.fields))


async def test_a_negative_page_size_is_invalid(stub, ws):
    await grant(stub, ws, 10)
    f = await fails(
        stub.ListTransactions(pb.ListTransactionsRequest(workspace_id=ws, page_size=-1))
    )
    assert ("INVALID_ARGUMENT", ["page_size"]) == (f.code.name, f.fields)


async def test_a_malformed_page_token_is_invalid(stub, ws):
    await grant(stub, ws, 10)
    f = await fails(
        stub.ListTransactions(
            pb.ListTransactionsRequest(workspace_id=ws, page_token="not-a-token!")
        )
    )
    assert ("INVALID_ARGUMENT", ["page_token"]) == (f.code.name, f.fields)


async def test_a_stream_item_without_a_request_gets_its_own_error_and_the_stream_goes_on(stub, ws):
    await grant(stub, ws, 10)

    async def requests():
        yield pb.StreamRequest(
            items=[
                pb.StreamItem(),
                pb.StreamItem(
                    reserve=pb.ReserveRequest(workspace_id=ws, request_id="ok-1", amount=1)
                ),
            ]
        )

    results = [r async for resp in stub.Stream(requests()) for r in resp.results]
    by_id = {r.request_id: r.status.code for r in results}
    assert {"": 3, "ok-1": 0} == by_id  # 3 = INVALID_ARGUMENT
