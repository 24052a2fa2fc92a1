"""ListTransactions: keyset pages that hold still while entries arrive, and every filter."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import grpc
from google.protobuf.timestamp_pb2 import Timestamp

from meterpb.v1 import meter_pb2 as pb
from tests.support import fails, grant, rid


async def charge(stub: Any, ws: str, amount: int, operation: str, actor: str = "") -> None:
    await stub.Charge(
        pb.ChargeRequest(
            workspace_id=ws, request_id=rid(), operation=operation, amount=amount, actor_id=actor
        )
    )


def ts(dt: datetime) -> Timestamp:
    t = Timestamp()
    t.FromDatetime(dt)
    return t


async def every_page(stub: Any, request: pb.ListTransactionsRequest, between: Any = None) -> list:
    found: list[pb.JournalEntry] = []
    while True:
        page = await stub.ListTransactions(request)
        found += page.entries
        if not page.next_page_token:
            return found
        if between is not None:
            await between()
        request.page_token = page.next_page_token


async def test_pages_return_every_entry_exactly_once_while_new_entries_arrive(stub, ws):
    await grant(stub, ws, 10_000)
    for _ in range(40):
        await charge(stub, ws, 1, "content.optimize")
    before = await stub.ListTransactions(
        pb.ListTransactionsRequest(workspace_id=ws, page_size=1000)
    )

    async def more() -> None:
        for _ in range(3):
            await charge(stub, ws, 2, "content.optimize")

    found = await every_page(stub, pb.ListTransactionsRequest(workspace_id=ws, page_size=7), more)

    ids = [e.entry_id for e in found]
    assert len(ids) == len(set(ids))
    assert [e.entry_id for e in before.entries] == ids  # newest first, none lost, none twice
    assert 41 == len(ids)


async def test_history_filters_by_kind_operation_actor_and_time(stub, db, ws):
    await grant(stub, ws, 1000)
    await charge(stub, ws, 3, "content.generate_post", "alice")
    await charge(stub, ws, 5, "strategy.analyze", "bob")
    await charge(stub, ws, 2, "content.generate_post", "bob")
    db.execute(
        "UPDATE journal SET created_at = :t WHERE workspace_id = :w AND entry_id = 1",
        t=datetime(2024, 1, 1, tzinfo=UTC),
        w=ws,
    )

    async def amounts(**kw: Any) -> list[int]:
        req = pb.ListTransactionsRequest(workspace_id=ws, page_size=2, **kw)
        return [e.amount for e in await every_page(stub, req)]

    assert [1000] == await amounts(kinds=[pb.ENTRY_KIND_GRANT])
    assert [-2, -3] == await amounts(operations=["content.generate_post"])
    assert [-2, -5] == await amounts(actor_id="bob")
    assert [-2] == await amounts(actor_id="bob", operations=["content.generate_post"])
    assert [1000] == await amounts(end_time=ts(datetime(2024, 1, 2, tzinfo=UTC)))
    assert [-2, -5, -3] == await amounts(start_time=ts(datetime(2024, 1, 2, tzinfo=UTC)))


async def test_a_page_token_only_continues_the_query_it_came_from(stub, ws):
    await grant(stub, ws, 100)
    for _ in range(3):
        await charge(stub, ws, 1, "content.optimize")
    page = await stub.ListTransactions(pb.ListTransactionsRequest(workspace_id=ws, page_size=2))

    f = await fails(
        stub.ListTransactions(
            pb.ListTransactionsRequest(
                workspace_id=ws,
                page_size=2,
                page_token=page.next_page_token,
                kinds=[pb.ENTRY_KIND_CHARGE],
            )
        )
    )

    assert (grpc.StatusCode.INVALID_ARGUMENT, ["page_token"]) == (f.code, f.fields)
