"""StreamSession: concurrent calls of a worker pool, batched over one Stream, answered exactly."""

from __future__ import annotations

import asyncio

import pytest

from meter.client import HoldNotFound, InsufficientCredits
from tests.support import balance, grant, rid


async def test_many_concurrent_jobs_across_workspaces_leave_exact_balances(meter, stub):
    workspaces = [f"ws-{rid('s')}" for _ in range(5)]
    for w in workspaces:
        await grant(stub, w, 1000)

    async def job(w: str, n: int) -> int:
        job_id = rid()
        hold = await session.reserve(w, job_id, "strategy.analyze", amount=10)
        assert 10 == hold.amount
        if n % 4 == 0:
            await session.release(w, job_id)
            return 0
        done = await session.commit(w, job_id, amount=n % 7 + 1)
        return done.charged

    async with meter.stream_session() as session:
        spent = await asyncio.gather(*(job(w, n) for w in workspaces for n in range(40)))

    assert 400 == session.items_sent
    assert session.messages_sent < 100  # concurrent calls shared messages
    per_workspace = [sum(spent[i * 40 : (i + 1) * 40]) for i in range(len(workspaces))]
    expected = sum(n % 7 + 1 for n in range(40) if n % 4)
    assert [expected] * len(workspaces) == per_workspace
    for w in workspaces:
        b = await balance(stub, w)
        assert (1000 - expected, 0, expected) == (b.available, b.held, b.lifetime_used)


async def test_a_refused_item_raises_its_typed_error_and_the_others_go_through(meter, stub, ws):
    await grant(stub, ws, 10)

    async with meter.stream_session() as session:
        results = await asyncio.gather(
            session.charge(ws, rid(), "strategy.analyze", amount=4),
            session.charge(ws, rid(), "strategy.analyze", amount=500),
            session.commit(ws, "never-reserved", amount=1),
            return_exceptions=True,
        )

    assert 4 == results[0].charged
    assert isinstance(results[1], InsufficientCredits)
    assert (500, 6) == (results[1].required, results[1].available)
    assert isinstance(results[2], HoldNotFound)
    assert 6 == (await balance(stub, ws)).available


async def test_a_commit_sent_with_its_reserve_waits_for_it(meter, stub, ws):
    """Calls for one request id go out one after the other, so the commit finds its hold."""
    await grant(stub, ws, 10)
    job = rid()

    async with meter.stream_session() as session:
        hold, done = await asyncio.gather(
            session.reserve(ws, job, "strategy.analyze", amount=5),
            session.commit(ws, job, amount=2),
        )

    assert (5, 2) == (hold.amount, done.charged)
    assert 8 == (await balance(stub, ws)).available


async def test_a_closed_session_refuses_new_calls(meter, ws):
    session = meter.stream_session()
    await session.close()

    with pytest.raises(RuntimeError):
        await session.reserve(ws, rid(), "strategy.analyze", amount=1)
