"""ListEvents as a pull consumer sees it: resumable, without gaps or repeats, while several
replicas write, and never past an event whose transaction commits late."""

from __future__ import annotations

import asyncio
import contextlib
import json
import uuid
from datetime import UTC, datetime
from typing import Any

import grpc
import psycopg
import pytest
from sqlalchemy import text

from meter.app import App
from meter.config import Settings
from meter.rpc.paging import Paging
from meter.storage import ledger_sql as sql
from meter.storage.db import async_engine, normalize_url
from meter.storage.events_repo import write_global_event
from meter.storage.shards import OneShard
from meterpb.v1 import events_pb2 as epb
from meterpb.v1 import meter_pb2 as pb
from meterpb.v1 import meter_pb2_grpc
from tests.support import eventually, fails, rid


async def page(events: Any, token: str, ws: str = "", size: int = 7) -> epb.ListEventsResponse:
    return await events.ListEvents(
        epb.ListEventsRequest(workspace_id=ws, page_size=size, page_token=token)
    )


async def test_a_consumer_paging_while_two_replicas_write_misses_none_and_sees_none_twice(
    app, database_url, stub, events, db
):
    second = App(
        Settings(database_url=database_url, listen="127.0.0.1:0"), normalize_url(database_url)
    )
    await second.start()
    prefix = f"feed-{uuid.uuid4().hex[:8]}"
    workspaces = [f"{prefix}-{i}" for i in range(6)]
    try:
        async with grpc.aio.insecure_channel(f"127.0.0.1:{second.port}") as ch:
            stubs = [stub, meter_pb2_grpc.MeterStub(ch)]
            # Start the consumer at the feed's current end.
            start = (await page(events, "", size=1000)).next_page_token
            while (more := await page(events, start, size=1000)).events:
                start = more.next_page_token
            done = asyncio.Event()

            async def writer(n: int) -> None:
                s = stubs[n % 2]
                for i in range(60):
                    ws = workspaces[(n + i) % len(workspaces)]
                    # A grant is one event; a refused reservation is another.
                    await s.GrantCredits(
                        pb.GrantCreditsRequest(workspace_id=ws, request_id=rid("g"), amount=1)
                    )
                    with contextlib.suppress(grpc.aio.AioRpcError):
                        await s.Reserve(
                            pb.ReserveRequest(workspace_id=ws, request_id=rid(), amount=10**9)
                        )

            seen: list[str] = []

            async def consumer() -> None:
                token = start
                while True:
                    got = await page(events, token)
                    seen.extend(e.event_id for e in got.events if e.workspace_id in workspaces)
                    token = got.next_page_token
                    if not got.events:
                        if done.is_set():
                            return
                        await asyncio.sleep(0.01)

            reading = asyncio.create_task(consumer())
            await asyncio.gather(*(writer(n) for n in range(8)))
            stored = db.rows(
                "SELECT workspace_id, sequence FROM events WHERE workspace_id LIKE :p",
                p=prefix + "-%",
            )
            assert 8 * 60 * 2 == len(stored)

            async def caught_up() -> bool:
                return len(set(seen)) >= len(stored)

            await eventually(caught_up, within=20)
            done.set()
            await reading
    finally:
        await second.stop(grace=1.0)

    expected = {f"evt_{seq}_{w}" for w, seq in stored}
    assert len(seen) == len(set(seen)), "an event was seen twice"
    assert expected == set(seen)
    # Within a workspace the feed keeps the workspace's order.
    for w in workspaces:
        mine = [int(e.split("_")[1]) for e in seen if e.endswith("_" + w)]
        assert sorted(mine) == mine


async def test_an_event_written_after_one_still_uncommitted_waits_for_it(events, pg_url, ws):
    """A writer takes its events' positions under its shard group's feed head, and holds it
    until it commits: the next writer waits, so no reader can see the later position and
    pass over the earlier one, which would then never be read."""
    first, second = [f"{ws}-first", f"{ws}-second"]
    now = datetime.now(UTC)

    def write(conn: psycopg.Connection[Any], w: str) -> None:
        rows = [(w, 1, "credits.granted", now, json.dumps({"workspace_id": w}))]
        message = sql.Writer().message(conn, [[] for _ in sql.write_parts()], events=rows)
        conn.execute(message.removesuffix("COMMIT"))

    with psycopg.connect(pg_url) as t1, psycopg.connect(pg_url) as t2:
        write(t1, first)  # holds the head, uncommitted
        t2.execute("SET lock_timeout = '200ms'")
        with pytest.raises(psycopg.errors.LockNotAvailable):
            write(t2, second)
        t2.rollback()
        t1.commit()
        write(t2, second)
        t2.commit()
    assert [first, second] == [w for w in await _all_workspaces(events) if w in (first, second)]


async def _all_workspaces(events: Any) -> list[str]:
    """The workspaces of the whole feed's events, in feed order."""
    found, token = [], ""
    while True:
        got = await page(events, token, size=1000)
        found += [e.workspace_id for e in got.events]
        if not got.events:
            return found
        token = got.next_page_token


async def test_a_page_token_of_the_order_before_positions_resumes_where_it_stood(
    stub, events, db, ws
):
    """Tokens made before feed positions (migration 0009) held the feed's old order, by
    transaction id: a consumer holding one goes on from the event it had reached."""
    for _ in range(3):
        await stub.GrantCredits(pb.GrantCreditsRequest(workspace_id=ws, request_id=rid(), amount=5))
    rows = db.rows(
        "SELECT txid::text AS xid, sequence FROM events WHERE workspace_id = :w ORDER BY sequence",
        w=ws,
    )
    old = Paging().token([int(rows[0].xid), ws, rows[0].sequence], ("events", ws, ()))
    got = await events.ListEvents(epb.ListEventsRequest(workspace_id=ws, page_token=old))
    assert [2, 3] == [e.sequence for e in got.events]
    whole = Paging().token([int(rows[1].xid), ws, rows[1].sequence], ("events", "", ()))
    seen = []
    while True:
        page_ = await events.ListEvents(epb.ListEventsRequest(page_token=whole, page_size=1000))
        seen += [e.sequence for e in page_.events if e.workspace_id == ws]
        if not page_.events:
            break
        whole = page_.next_page_token
    assert [3] == seen


async def _sequences(events: Any, ws: str, *, whole_feed: bool, n: int) -> list[int] | None:
    """The workspace's event sequences in feed order (from its own feed or the unfiltered
    one), once there are n."""
    found, token = [], ""
    while True:
        request = epb.ListEventsRequest(page_size=1000, page_token=token)
        if not whole_feed:
            request.workspace_id = ws
        page_ = await events.ListEvents(request)
        found += [e.sequence for e in page_.events if e.workspace_id == ws]
        if not page_.events:
            return found if len(found) >= n else None
        token = page_.next_page_token


async def test_a_token_from_another_query_is_refused(events, ws):
    token = (await page(events, "", ws=ws)).next_page_token
    failed = await fails(events.ListEvents(epb.ListEventsRequest(page_token=token)))
    assert grpc.StatusCode.INVALID_ARGUMENT == failed.code
    assert ["page_token"] == failed.fields


async def test_the_feed_pages_through_a_workspace_oldest_first(stub, events, ws):
    for i in range(12):
        await stub.GrantCredits(
            pb.GrantCreditsRequest(workspace_id=ws, request_id=f"g-{i}", amount=1 + i)
        )
    amounts, token = [], ""

    async def all_read() -> bool:
        nonlocal token
        got = await page(events, token, ws=ws, size=5)
        amounts.extend(json.loads(e.data)["amount"] for e in got.events)
        token = got.next_page_token
        return len(amounts) >= 12

    await eventually(all_read)
    assert list(range(1, 13)) == amounts


async def test_two_concurrent_global_events_reach_the_feed_in_sequence_order(events, database_url):
    """Catalog publishes and endpoint disables are about no workspace, so no workspace lock
    orders them: one that took its transaction id first and its sequence second must still
    come after the other in the feed."""
    engine = async_engine(database_url)
    try:
        async with engine.connect() as early, engine.connect() as late:
            await early.execute(text("SELECT pg_current_xact_id()"))  # the smaller id, first
            await write_global_event(late, OneShard(), "catalog.published", '{"version": -1}')
            await late.commit()
            await write_global_event(early, OneShard(), "catalog.published", '{"version": -2}')
            await early.commit()
    finally:
        await engine.dispose()

    async def ours() -> list[tuple[int, int]] | None:
        found, token = [], ""
        while True:
            got = await events.ListEvents(
                epb.ListEventsRequest(page_size=1000, page_token=token, types=["catalog.published"])
            )
            for e in got.events:
                version = json.loads(e.data).get("version")
                if e.workspace_id == "" and version in (-1, -2):
                    found.append((version, e.sequence))
            if not got.events:
                return found if len(found) == 2 else None
            token = got.next_page_token

    (first, first_seq), (second, second_seq) = await eventually(ours)
    assert (-1, -2) == (first, second)
    assert first_seq < second_seq
