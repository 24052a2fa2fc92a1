"""Bursts: many calls at once queue for their connections and are answered, none refused."""

from __future__ import annotations

import asyncio
import contextlib
from typing import Any

import grpc

from meter.app import READ_POOL_SIZE, WATCH_POOL_SIZE, App
from meterpb.v1 import meter_pb2 as pb
from meterpb.v1 import meter_pb2_grpc
from tests.support import fails, grant, reserve, rid

OPENS = 300  # far beyond the watchers' pool
READS = 500


async def first_message(stub: Any, workspace_id: str) -> pb.WatchBalanceResponse:
    call = stub.WatchBalance(pb.WatchBalanceRequest(workspace_id=workspace_id))
    try:
        msg: pb.WatchBalanceResponse = await call.read()
        return msg
    finally:
        call.cancel()


async def test_a_burst_of_watch_opens_beyond_the_pool_all_get_their_first_message(
    stub: Any, app: App, ws: str
) -> None:
    """Every open is answered with its own workspace's balance, none UNAVAILABLE, and the
    burst is read in fewer queries than it has opens."""
    assert OPENS > WATCH_POOL_SIZE
    workspaces = [f"{ws}-{i}" for i in range(OPENS)]
    await asyncio.gather(*(grant(stub, w, 100 + i) for i, w in enumerate(workspaces)))
    queries = app.watch.gathered.queries

    firsts = await asyncio.gather(*(first_message(stub, w) for w in workspaces))

    expected = [(w, 100 + i) for i, w in enumerate(workspaces)]
    assert expected == [(m.balance.workspace_id, m.balance.available) for m in firsts]
    assert app.watch.gathered.queries - queries < OPENS


@contextlib.asynccontextmanager
async def reads_pool_held(app: App) -> Any:
    """Every connection of the unary reads' pool, checked out for the length of the block."""
    async with contextlib.AsyncExitStack() as stack:
        for _ in range(READ_POOL_SIZE):
            await stack.enter_async_context(app.reads_engine.connect())
        yield


async def test_a_burst_of_reads_waits_for_connections_while_writes_go_on(
    stub: Any, app: App, ws: str
) -> None:
    """With every read connection busy, 500 GetBalance calls queue (none refused) while a
    Reserve completes; once connections free up, every read is answered."""
    await grant(stub, ws, 1_000)
    async with reads_pool_held(app):
        reads = [
            asyncio.ensure_future(stub.GetBalance(pb.GetBalanceRequest(workspace_id=ws)))
            for _ in range(READS)
        ]
        hold = await reserve(stub, ws, rid(), 10)
        assert pb.HOLD_STATE_HELD == hold.state
        assert 0 == sum(r.done() for r in reads)  # the writer did not wait for the readers
    balances = await asyncio.gather(*reads)
    assert [990] * READS == [b.available for b in balances]


async def test_a_read_queued_past_its_deadline_ends_deadline_exceeded_not_unavailable(
    stub: Any, app: App, ws: str
) -> None:
    await grant(stub, ws, 1_000)
    async with reads_pool_held(app):
        failed = await fails(stub.GetBalance(pb.GetBalanceRequest(workspace_id=ws), timeout=0.3))
    assert grpc.StatusCode.DEADLINE_EXCEEDED == failed.code


WATCHERS = 5_000  # beyond the 3,000 calls that gRPC lets wait, at its defaults, to be taken


async def test_a_burst_of_watchers_beyond_grpcs_waiting_calls_all_get_their_first_message(
    app: App, ws: str
) -> None:
    """gRPC keeps a call that has arrived waiting until the server takes it, and at its
    defaults refuses it beyond 3,000 waiting: a burst of page loads lost streams. All of
    5,000 opens at once get the balance, none refused."""
    channels = [
        grpc.aio.insecure_channel(f"127.0.0.1:{app.port}", options=[("test.channel", i)])
        for i in range(10)
    ]
    try:
        stubs = [meter_pb2_grpc.MeterStub(c) for c in channels]
        await grant(stubs[0], ws, 250)
        results = await asyncio.gather(
            *(first_message(stubs[i % len(stubs)], ws) for i in range(WATCHERS)),
            return_exceptions=True,
        )
    finally:
        await asyncio.gather(*(c.close() for c in channels))
    refused = [r for r in results if isinstance(r, BaseException)]
    assert [] == refused[:3]
    assert [250] * WATCHERS == [r.balance.available for r in results]
