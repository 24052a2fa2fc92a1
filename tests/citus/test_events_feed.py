"""tests/events/test_feed.py against the Citus cluster (the session's `database_url` is its),
with Citus's own versions of the two tests that are written for plain PostgreSQL's single
feed."""

from __future__ import annotations

import json
import uuid
from datetime import UTC, datetime
from typing import Any

import psycopg
import pytest
from sqlalchemy import text

from meter.app import App
from meter.storage import ledger_sql as sql
from meter.storage.db import async_engine
from meter.storage.dburl import DatabaseUrl
from meter.storage.events_repo import write_global_event
from meterpb.v1 import events_pb2 as epb
from tests.events.test_feed import *  # noqa: F403
from tests.events.test_feed import _all_workspaces
from tests.support import eventually

pytestmark = pytest.mark.citus

# Written for plain PostgreSQL's one feed (key ''), so they cannot apply as they are; the
# versions below test the same on Citus:
# * it writes through the coordinator with the plain Writer and expects its session's
#   lock_timeout to end the second writer's wait; on Citus that wait is on the worker that
#   holds the group, which the coordinator's session settings do not reach, so it waits
#   until pytest's timeout.
del test_an_event_written_after_one_still_uncommitted_waits_for_it  # noqa: F821
# * it writes its global events with OneShard(), under the feed key '' that no shard group
#   of a Citus database has: ListEvents never reads them.
del test_two_concurrent_global_events_reach_the_feed_in_sequence_order  # noqa: F821


async def test_a_writer_holds_its_groups_feed_head_until_it_commits_on_the_groups_worker(
    app: App, database_url: str, events: Any
) -> None:
    """A writer takes its events' positions under its shard group's feed head on the worker
    that holds the group, and holds it until it commits: the next writer of the group waits,
    so no reader can see the later position and pass over the earlier one."""
    first = f"ws-{uuid.uuid4().hex[:12]}"
    group = app.nodes.group(first)
    candidates = (f"ws-{uuid.uuid4().hex[:12]}" for _ in range(10_000))
    second = next(w for w in candidates if app.nodes.group(w) == group)  # the same group
    assert group.node is not None
    worker = DatabaseUrl.parse(database_url).with_node(group.node.host, group.node.port).libpq()
    now = datetime.now(UTC)

    def write(conn: psycopg.Connection[Any], w: str) -> None:
        rows = [(w, 1, "credits.granted", now, json.dumps({"workspace_id": w}))]
        writer = sql.Writer(citus=True)
        parts = [[] for _ in sql.write_parts(citus=True)]
        message = writer.message(conn, parts, events=rows, feed_key=group.feed_key)
        conn.execute(message.removesuffix("COMMIT"))

    with psycopg.connect(worker) as t1, psycopg.connect(worker) as t2:
        write(t1, first)  # holds the head, uncommitted
        t2.execute("SET lock_timeout = '200ms'")
        with pytest.raises(psycopg.errors.LockNotAvailable):
            write(t2, second)
        t2.rollback()
        t1.commit()
        write(t2, second)
        t2.commit()
    assert [first, second] == [w for w in await _all_workspaces(events) if w in (first, second)]


async def test_two_concurrent_global_events_reach_the_feed_in_sequence_order_on_citus(
    app: App, events: Any, database_url: str
) -> None:
    """As on plain PostgreSQL, with the server's own shard map: global events (about no
    workspace) go to the feed of the group of workspace '', ordered by its feed head."""
    engine = async_engine(database_url)
    try:
        async with engine.connect() as early, engine.connect() as late:
            await early.execute(text("SELECT pg_current_xact_id()"))  # the smaller id, first
            await write_global_event(late, app.nodes, "catalog.published", '{"version": -11}')
            await late.commit()
            await write_global_event(early, app.nodes, "catalog.published", '{"version": -12}')
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
                if e.workspace_id == "" and version in (-11, -12):
                    found.append((version, e.sequence))
            if not got.events:
                return found if len(found) == 2 else None
            token = got.next_page_token

    (first, first_seq), (second, second_seq) = await eventually(ours)
    assert (-11, -12) == (first, second)
    assert first_seq < second_seq
