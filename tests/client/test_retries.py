"""Retries reuse the request id, so a call whose answer was lost takes effect once."""

from __future__ import annotations

import asyncio

import grpc
import pytest
import sqlalchemy as sa

from meter.client import AsyncMeterClient, MeterClient, RetryEvent, RetryPolicy, Unavailable
from tests.proxy import Proxy
from tests.support import balance, grant, rid


def _lock_workspace(db, ws: str):
    """Hold the workspace's row lock, so the server's transaction waits behind it."""
    conn = db.engine.connect()
    conn.execute(sa.text("SELECT 1 FROM workspaces WHERE workspace_id = :w FOR UPDATE"), {"w": ws})
    return conn


async def test_a_retry_after_a_dropped_answer_charges_exactly_once(target, stub, db, ws):
    """The first attempt's deadline passes while the server is still applying it; the
    retry carries the same request id and gets the first attempt's charge back."""
    await grant(stub, ws, 50)
    retried = asyncio.Event()
    events: list[RetryEvent] = []

    def on_retry(event: RetryEvent) -> None:
        events.append(event)
        retried.set()

    policy = RetryPolicy(
        attempt_timeout=0.3, attempt_timeout_multiplier=30, initial_backoff=0.01, on_retry=on_retry
    )
    job = rid()
    async with AsyncMeterClient(target, retry=policy) as meter:
        lock = await asyncio.to_thread(_lock_workspace, db, ws)
        try:
            charge = asyncio.create_task(meter.charge(ws, job, "strategy.analyze", amount=7))
            await asyncio.wait_for(retried.wait(), 10)
        finally:
            await asyncio.to_thread(lock.close)  # rolls back: the server's batch goes on
        done = await charge

    assert grpc.StatusCode.DEADLINE_EXCEEDED == events[0].error.code
    assert 7 == done.charged
    assert 1 == db.scalar(
        "SELECT count(*) FROM journal WHERE workspace_id = :w AND request_id = :r",
        w=ws,
        r=job,
    )
    b = await balance(stub, ws)
    assert (43, 7) == (b.available, b.lifetime_used)


async def test_a_call_retries_through_an_outage_with_the_same_request_id(app, stub, ws):
    await grant(stub, ws, 50)
    proxy = await Proxy(("127.0.0.1", app.port)).start()
    down = asyncio.Event()

    def on_retry(event: RetryEvent) -> None:
        down.set()

    policy = RetryPolicy(
        attempt_timeout=2, initial_backoff=0.02, max_backoff=0.1, budget=10, on_retry=on_retry
    )
    await proxy.cut()
    try:
        # A quick reconnection, so that the test does not wait out gRPC's default 1 s.
        fast = [("grpc.initial_reconnect_backoff_ms", 50), ("grpc.min_reconnect_backoff_ms", 50)]
        target = f"127.0.0.1:{proxy.port}"
        async with AsyncMeterClient(target, retry=policy, options=fast) as meter:
            charge = asyncio.create_task(meter.charge(ws, rid(), "strategy.analyze", amount=4))
            await asyncio.wait_for(down.wait(), 10)
            await proxy.restore()
            done = await charge
    finally:
        await proxy.cut()

    assert 4 == done.charged
    assert 46 == (await balance(stub, ws)).available


async def test_an_unreachable_server_raises_unavailable_once_the_budget_is_spent():
    policy = RetryPolicy(attempt_timeout=0.5, initial_backoff=0.01, max_backoff=0.05, budget=0.5)

    def run() -> None:
        with MeterClient("127.0.0.1:1", retry=policy) as meter:
            meter.balance("ws-nowhere")

    with pytest.raises(Unavailable):
        await asyncio.to_thread(run)
