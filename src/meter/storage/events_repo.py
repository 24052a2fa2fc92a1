"""The events outbox's reads and the webhook tables: the feed, endpoints, deliveries.

The feed's order is (txid, workspace_id, sequence): the writing transaction's id, then the
event's place in it. A reader takes only events whose transaction id is below the oldest
transaction still running (`pg_snapshot_xmin` of its snapshot), so every transaction it
could pass over has finished: an event that commits later always sorts after the position
a reader has reached. That is what lets ListEvents consumers and the dispatcher's fan-out
resume from a position without gaps or repeats while any number of replicas write. The
price is that an event becomes readable only once every transaction older than its own has
ended (milliseconds on Meter's short transactions; a long transaction elsewhere in the
cluster holds the feed back for its length).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from sqlalchemy import TextClause, text
from sqlalchemy.ext.asyncio import AsyncConnection

from meter.events.model import FeedPosition, StoredEvent, parse_event_id
from meter.storage.db import Repository, translating

HORIZON = "pg_snapshot_xmin(pg_current_snapshot())"

_EVENT_COLUMNS = "workspace_id, sequence, type, created_at, data::text AS data"

# An endpoint's filters (event types :types, workspaces :wss) on events; empty: every one.
TYPE_FILTER = "(cardinality(CAST(:types AS text[])) = 0 OR type = ANY(CAST(:types AS text[])))"
WORKSPACE_FILTER = (
    "(cardinality(CAST(:wss AS text[])) = 0 OR workspace_id = ANY(CAST(:wss AS text[])))"
)


def _feed(after: str, order: str) -> TextClause:
    """A read of the feed: the horizon, and up to :n events of type :types (any, if empty)
    past the position `after` states, below the horizon, in `order`. There is always one
    row; with no event in it, its txid is NULL and it carries the horizon alone."""
    return text(
        f"""
    WITH h AS (SELECT {HORIZON} AS x)
    SELECT h.x::text AS horizon, e.txid::text AS txid, e.workspace_id, e.sequence, e.type,
           e.created_at, e.data
      FROM h LEFT JOIN LATERAL (
        SELECT txid, {_EVENT_COLUMNS} FROM events
         WHERE {after} AND txid < h.x AND {TYPE_FILTER}
         ORDER BY {order} LIMIT :n) e ON true
    """
    )


_FEED = _feed(
    f"(txid, workspace_id, sequence) > (CAST(:t AS xid8), :w, :s) AND {WORKSPACE_FILTER}",
    "txid, workspace_id, sequence",
)
# One workspace's events: its own index, in the same order.
_WORKSPACE_FEED = _feed(
    "workspace_id = :ws AND (txid, sequence) > (CAST(:t AS xid8), :s)", "txid, sequence"
)

# Global events are about no workspace (workspace_id ''), and so no workspace lock orders
# them: their writers take this transaction-level lock instead, before their sequence, and
# raise their feed position to the last global event's (as batches do under a workspace's
# lock), so two concurrent ones reach the feed in sequence order.
_GLOBAL_LOCK = text("SELECT pg_advisory_xact_lock(hashtext('meter.events.global'))")
_GLOBAL_EVENT = text(
    """
    WITH s AS (SELECT nextval('event_global_seq') AS n)
    INSERT INTO events (workspace_id, sequence, type, created_at, data, txid)
    SELECT '', s.n, :type, now(),
           CAST(:data AS jsonb) || jsonb_build_object('workspace_id', '', 'sequence', s.n),
           greatest(pg_current_xact_id(),
                    (SELECT max(e.txid) FROM events e WHERE e.workspace_id = ''))
      FROM s
    """
)


async def write_global_event(conn: AsyncConnection, type_: str, data: str) -> None:
    """Write an event about no workspace in the caller's transaction (`data`: a JSON object).
    Holds the global events' lock until that transaction ends."""
    await conn.execute(_GLOBAL_LOCK)
    await conn.execute(_GLOBAL_EVENT, {"type": type_, "data": data})


def event_of(r: Any) -> StoredEvent:
    return StoredEvent(r.workspace_id, r.sequence, r.type, r.created_at, r.data)


def _next_position(
    rows: Sequence[Any], after: FeedPosition, limit: int, workspace_id: str
) -> FeedPosition:
    """Where a reader continues: after the last row, or, when the page was not full (every
    event below the horizon was seen), at the horizon itself."""
    last = after
    found = [r for r in rows if r.txid is not None]
    if found:
        r = found[-1]
        last = (int(r.txid), r.workspace_id, r.sequence)
    if len(found) < limit:
        horizon = (int(rows[0].horizon), workspace_id, 0)
        last = max(last, horizon)
    return last


class EventsRepo(Repository):
    """The feed: ListEvents, and the dispatcher's fan-out."""

    @translating
    async def feed(
        self,
        after: FeedPosition | None,
        limit: int,
        *,
        workspace_id: str = "",
        types_: Sequence[str] = (),
    ) -> tuple[list[StoredEvent], FeedPosition]:
        """Events after a position, oldest first, and the position to continue from."""
        pos = after or (0, "", 0)
        async with self.autocommit.connect() as conn:
            return await self.read(conn, pos, limit, workspace_id, (), types_)

    async def read(
        self,
        conn: AsyncConnection,
        pos: FeedPosition,
        limit: int,
        workspace_id: str,
        workspace_ids: Sequence[str],
        types_: Sequence[str],
    ) -> tuple[list[StoredEvent], FeedPosition]:
        params = {"t": str(pos[0]), "s": pos[2], "n": limit, "types": list(types_)}
        if workspace_id:
            rows = (await conn.execute(_WORKSPACE_FEED, {**params, "ws": workspace_id})).all()
        else:
            rows = (
                await conn.execute(_FEED, {**params, "w": pos[1], "wss": list(workspace_ids)})
            ).all()
        events = [event_of(r) for r in rows if r.txid is not None]
        # The horizon position for an unfiltered feed starts before every workspace ('').
        return events, _next_position(rows, pos, limit, workspace_id)

    @translating
    async def events_by_id(self, ids: Sequence[str]) -> list[StoredEvent]:
        keys = [k for k in map(parse_event_id, ids) if k is not None]
        if not keys:
            return []
        rows = await self.fetch_all(
            text(
                f"SELECT {_EVENT_COLUMNS} FROM events"
                " WHERE (workspace_id, sequence) IN"
                " (SELECT * FROM unnest(CAST(:w AS text[]), CAST(:s AS int8[])))"
            ),
            {"w": [k[0] for k in keys], "s": [k[1] for k in keys]},
        )
        return [event_of(r) for r in rows]

    @translating
    async def purge(self, retention_s: float, limit: int = 10_000) -> int:
        """Delete events, deliveries and attempts older than the retention; returns events
        deleted (at most `limit` per call, so a long backlog never makes one long lock)."""
        params = {"after": retention_s, "n": limit}
        async with self.engine.begin() as conn:
            result = await conn.execute(
                text(
                    "DELETE FROM events WHERE (workspace_id, sequence) IN (SELECT workspace_id,"
                    " sequence FROM events WHERE created_at < now() - make_interval(secs =>"
                    " :after) ORDER BY created_at LIMIT :n)"
                ),
                params,
            )
            for table, column in (
                ("webhook_deliveries", "created_at"),
                ("webhook_attempts", "attempted_at"),
            ):
                await conn.execute(
                    text(
                        f"DELETE FROM {table} WHERE {column} <"
                        " now() - make_interval(secs => :after)"
                    ),
                    params,
                )
        return result.rowcount
