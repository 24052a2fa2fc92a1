"""Reserve with wait_for_funds: it waits for a grant, holding no database connection."""

from __future__ import annotations

import asyncio
import time
from typing import Any

import grpc

from meterpb.v1 import meter_pb2 as pb
from tests.support import balance, eventually, fails, grant, rid


def waiting_reserve(stub: Any, ws: str, job: str, amount: int, wait_s: float, **kw: Any) -> Any:
    return stub.Reserve(
        pb.ReserveRequest(
            workspace_id=ws,
            request_id=job,
            amount=amount,
            wait_for_funds={"seconds": int(wait_s), "nanos": int(wait_s % 1 * 1e9)},
        ),
        **kw,
    )


def connections_in_use(app: Any) -> int:
    used = int(app.engine.pool.checkedout())
    ledger_pool = getattr(app, "pool", None)  # the ledger's own pool, where there is one
    if ledger_pool is not None and hasattr(ledger_pool, "get_stats"):
        stats = ledger_pool.get_stats()
        used += stats.get("pool_size", 0) - stats.get("pool_available", 0)
    return used


async def refusals(stub: Any, ws: str, job: str) -> list[pb.AlertEvent]:
    found = await stub.ListAlerts(pb.ListAlertsRequest(workspace_id=ws))
    return [a for a in found.alerts if a.request_id == job]


async def test_a_waiting_reserve_holds_when_a_grant_lands_and_holds_no_connection_meanwhile(
    app, stub, ws
):
    await grant(stub, ws, 5)
    job = rid()
    waiting = asyncio.ensure_future(waiting_reserve(stub, ws, job, 50, 10, timeout=15))
    await eventually(lambda: refusals(stub, ws, job), within=5)

    # While it waits, it holds no connection: the server's pools come back to lending none
    # (the background tasks borrow one now and then, for a moment).
    async def none_lent() -> bool:
        return 0 == connections_in_use(app)

    await eventually(none_lent, within=5)
    assert not waiting.done()

    await grant(stub, ws, 100)

    held = await asyncio.wait_for(waiting, 2)
    assert (pb.HOLD_STATE_HELD, 50) == (held.hold.state, held.hold.amount)
    b = await balance(stub, ws)
    assert (55, 50) == (b.available, b.held)


async def test_a_waiting_reserve_sleeps_through_changes_that_do_not_cover_it(stub, ws):
    await grant(stub, ws, 5)
    job = rid()
    waiting = asyncio.ensure_future(waiting_reserve(stub, ws, job, 50, 10, timeout=15))
    await eventually(lambda: refusals(stub, ws, job), within=5)

    await grant(stub, ws, 10)
    await grant(stub, ws, 10)
    assert 25 == (await balance(stub, ws)).available
    await grant(stub, ws, 30)

    held = await asyncio.wait_for(waiting, 2)
    assert 50 == held.hold.amount
    # Only the first refusal is an event: retries that fall short again stay quiet.
    assert 1 == len(await refusals(stub, ws, job))


async def test_a_waiting_reserve_fails_cleanly_at_its_bound(stub, db, ws):
    await grant(stub, ws, 5)
    job = rid()
    started = time.monotonic()

    f = await fails(waiting_reserve(stub, ws, job, 120, 0.5, timeout=10))

    elapsed = time.monotonic() - started
    assert (grpc.StatusCode.FAILED_PRECONDITION, "INSUFFICIENT_CREDITS") == (f.code, f.reason)
    assert ("120", "5", "115", "Basic") == (
        f.metadata["required"],
        f.metadata["available"],
        f.metadata["shortfall"],
        f.metadata["suggested_package"],
    )
    assert 0.5 <= elapsed < 2.0
    assert 0 == db.scalar("SELECT count(*) FROM holds WHERE workspace_id = :w", w=ws)
    b = await balance(stub, ws)
    assert (5, 0) == (b.available, b.held)
    assert 1 == len(await refusals(stub, ws, job))


async def test_a_waiting_reserve_never_waits_past_the_call_deadline(stub, ws):
    await grant(stub, ws, 5)
    started = time.monotonic()

    f = await fails(waiting_reserve(stub, ws, rid(), 50, 600, timeout=0.6))

    # The server answers before the deadline, with the refusal rather than a timeout.
    assert (grpc.StatusCode.FAILED_PRECONDITION, "INSUFFICIENT_CREDITS") == (f.code, f.reason)
    assert time.monotonic() - started < 1.5


async def test_a_refused_waiting_reserve_can_be_retried_with_its_request_id(stub, ws):
    await grant(stub, ws, 5)
    job = rid()
    await fails(waiting_reserve(stub, ws, job, 20, 0.2, timeout=5))
    await grant(stub, ws, 20)

    held = await waiting_reserve(stub, ws, job, 20, 0.2, timeout=5)

    assert (pb.HOLD_STATE_HELD, 20) == (held.hold.state, held.hold.amount)


async def test_a_waiting_reserve_in_a_stream_holds_when_a_grant_lands(stub, ws):
    await grant(stub, ws, 1)
    job = rid()
    item = pb.StreamItem(
        reserve=pb.ReserveRequest(
            workspace_id=ws, request_id=job, amount=30, wait_for_funds={"seconds": 10}
        )
    )
    sent = asyncio.Event()

    async def requests() -> Any:
        yield pb.StreamRequest(items=[item])
        await sent.wait()

    call = stub.Stream(requests())
    try:
        await eventually(lambda: refusals(stub, ws, job), within=5)
        await grant(stub, ws, 50)
        response = await asyncio.wait_for(call.read(), 2)
    finally:
        sent.set()
        call.cancel()

    (result,) = response.results
    assert (0, 30) == (result.status.code, result.hold.amount)
