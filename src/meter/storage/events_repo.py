"""The events outbox's reads: the feed, events by id, retention; and global events' writes.

The feed is a position per shard group (migration 0009, meter.storage.shards): each event has
its group's feed key and a position in that group's feed, taken under the group's row of
feed_heads, which its writer holds until it commits. Positions therefore become visible in
order and without gaps: a reader resumes after the last position it saw in each group and
can never pass over an event that commits later. On plain PostgreSQL there is one group
(key ''); on Citus a group is read by router queries on the node that holds it.

* A workspace's feed is its events in sequence order (sequences are assigned under the
  workspace's lock and commit in order too): its cursor is the last sequence passed.
* The whole feed's cursor holds a position per group. A page takes the next events of every
  group in position order, oldest position first across groups, so each group's share of a
  page is the next run of its own feed.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from meter.events.model import GroupPositions, StoredEvent, parse_event_id
from meter.storage.db import Repository, translating
from meter.storage.shards import OneShard, Shards

_EVENT_COLUMNS = "workspace_id, sequence, type, created_at, data::text AS data"
# How many events a page of the whole feed looks through at most for ones its filters
# want; beyond that it answers what it found, with a cursor past all it looked through.
SCAN_LIMIT = 5000


def event_of(r: Any) -> StoredEvent:
    return StoredEvent(r.workspace_id, r.sequence, r.type, r.created_at, r.data)


_HEAD = text(
    "INSERT INTO feed_heads AS f (feed_key, pos) VALUES (:k, 1)"
    " ON CONFLICT (feed_key) DO UPDATE SET pos = f.pos + 1 RETURNING f.pos"
)
_GLOBAL_EVENT = text(
    "INSERT INTO events (workspace_id, sequence, type, created_at, data, feed_key, feed_pos)"
    " VALUES ('', :n, :type, now(),"
    " CAST(:data AS jsonb) || jsonb_build_object('workspace_id', '', 'sequence', :n), :k, :pos)"
)


async def write_global_event(conn: AsyncConnection, shards: Shards, type_: str, data: str) -> None:
    """Write an event about no workspace (workspace_id '') in the caller's transaction
    (`data`: a JSON object). Its group's feed head is locked first and kept locked until the
    transaction ends, so two concurrent ones take sequences and positions in one order."""
    k = shards.group("").feed_key
    pos = (await conn.execute(_HEAD, {"k": k})).scalar_one()
    n = (await conn.execute(text("SELECT nextval('event_global_seq')"))).scalar_one()
    await conn.execute(_GLOBAL_EVENT, {"n": n, "type": type_, "data": data, "k": k, "pos": pos})


_WORKSPACE_FEED = text(
    f"SELECT {_EVENT_COLUMNS}, (SELECT max(sequence) FROM events"
    "   WHERE feed_key = :k AND workspace_id = :ws) AS top"
    " FROM events WHERE feed_key = :k AND workspace_id = :ws AND sequence > :s"
    " AND (cardinality(CAST(:types AS text[])) = 0 OR type = ANY(CAST(:types AS text[])))"
    " ORDER BY sequence LIMIT :n"
)
_GROUP_FEED = text(
    f"SELECT feed_key, feed_pos, {_EVENT_COLUMNS} FROM events"
    " WHERE feed_key = :k AND feed_pos > :p ORDER BY feed_pos LIMIT :n"
)


def _groups_feed(count: int) -> Any:
    """The next events of `count` groups (:k0 after :p0, ...), in position order."""
    ors = " OR ".join(f"(feed_key = :k{i} AND feed_pos > :p{i})" for i in range(count))
    return text(
        f"SELECT feed_key, feed_pos, {_EVENT_COLUMNS} FROM events WHERE {ors}"
        " ORDER BY feed_pos, feed_key LIMIT :n"
    )


class EventsRepo(Repository):
    """The feed: ListEvents, and what the dispatcher's fan-out reads."""

    def __init__(self, engine: AsyncEngine, shards: Shards | None = None) -> None:
        super().__init__(engine)
        self.shards = shards or OneShard()

    def feed_keys(self) -> list[str]:
        """Every shard group's feed key."""
        return [g.feed_key for g in self.shards.map.groups]

    @translating
    async def workspace_feed(
        self, workspace_id: str, after: int, limit: int, types_: Sequence[str] = ()
    ) -> tuple[list[StoredEvent], int]:
        """A workspace's events after sequence `after`, oldest first, and the sequence to
        continue from (past every event of the workspace when the page is not full)."""
        params = {
            "k": self.shards.group(workspace_id).feed_key,
            "ws": workspace_id,
            "s": after,
            "n": limit,
            "types": list(types_),
        }
        async with self.autocommit.connect() as conn:
            rows = (await conn.execute(_WORKSPACE_FEED, params)).all()
        found = [event_of(r) for r in rows]
        if len(found) == limit:
            return found, found[-1].sequence
        top = max((r.top for r in rows), default=None)
        if top is None and not rows:
            top = (
                await self.fetch_all(
                    text(
                        "SELECT max(sequence) AS top FROM events"
                        " WHERE feed_key = :k AND workspace_id = :ws"
                    ),
                    params,
                )
            )[0].top
        return found, max(after, top or 0)

    @translating
    async def feed(
        self,
        after: GroupPositions,
        limit: int,
        *,
        types_: Sequence[str] = (),
        workspace_ids: Sequence[str] = (),
    ) -> tuple[list[StoredEvent], GroupPositions]:
        """Up to `limit` events of the whole feed past `after` (filtered by type and
        workspace, when given), oldest position first, and the positions to continue from."""
        pos = {k: after.get(k, 0) for k in self.feed_keys()}
        wanted_types, wanted_ws = set(types_), set(workspace_ids)
        found: list[StoredEvent] = []
        scanned = 0
        async with self.autocommit.connect() as conn:
            while len(found) < limit and scanned < SCAN_LIMIT:
                batch = max(limit, 100) if (wanted_types or wanted_ws) else limit - len(found)
                rows = await self._groups(conn, pos, batch)
                for r in rows:
                    pos[r.feed_key] = r.feed_pos
                    if (not wanted_types or r.type in wanted_types) and (
                        not wanted_ws or r.workspace_id in wanted_ws
                    ):
                        found.append(event_of(r))
                        if len(found) == limit:
                            break
                scanned += len(rows)
                if len(rows) < batch:
                    break
        return found, pos

    async def _groups(self, conn: AsyncConnection, pos: GroupPositions, n: int) -> Sequence[Any]:
        keys = list(pos)
        params: dict[str, Any] = {"n": n}
        for i, k in enumerate(keys):
            params[f"k{i}"], params[f"p{i}"] = k, pos[k]
        return (await conn.execute(_groups_feed(len(keys)), params)).all()

    async def group_feed(
        self, conn: AsyncConnection, feed_key: str, after: int, limit: int
    ) -> list[tuple[int, StoredEvent]]:
        """One group's events after position `after` in the caller's transaction, with their
        positions (the dispatcher's fan-out reads a group at a time)."""
        rows = await conn.execute(_GROUP_FEED, {"k": feed_key, "p": after, "n": limit})
        return [(r.feed_pos, event_of(r)) for r in rows]

    @translating
    async def sequence_of(self, txid: int, workspace_id: str, sequence: int) -> int:
        """Where a workspace feed's page token of the order before positions (txid, sequence;
        migration 0009) had got to, as a sequence: past the events it had passed."""
        rows = await self.fetch_all(
            text(
                "SELECT coalesce(max(sequence), 0) AS s FROM events WHERE workspace_id = :w"
                " AND (txid, sequence) <= (CAST(:t AS xid8), :s)"
            ),
            {"t": str(txid), "w": workspace_id, "s": sequence},
        )
        return int(rows[0].s)

    @translating
    async def positions_of(self, txid: int, workspace_id: str, sequence: int) -> GroupPositions:
        """Where a page token of the feed's order before positions (txid, workspace_id,
        sequence; migration 0009) had got to, as positions: past the events it had passed."""
        rows = await self.fetch_all(
            text(
                "SELECT feed_key, max(feed_pos) AS pos FROM events"
                " WHERE (txid, workspace_id, sequence) <= (CAST(:t AS xid8), :w, :s)"
                " GROUP BY feed_key"
            ),
            {"t": str(txid), "w": workspace_id, "s": sequence},
        )
        return {r.feed_key: int(r.pos) for r in rows}

    @translating
    async def events_by_id(self, ids: Sequence[str]) -> list[StoredEvent]:
        keys = [k for k in map(parse_event_id, ids) if k is not None]
        if not keys:
            return []
        rows = await self.fetch_all(
            text(
                f"SELECT {_EVENT_COLUMNS} FROM events"
                " WHERE feed_key = ANY(CAST(:k AS text[])) AND (workspace_id, sequence) IN"
                " (SELECT * FROM unnest(CAST(:w AS text[]), CAST(:s AS int8[])))"
            ),
            {
                "k": sorted({self.shards.group(w).feed_key for w, _ in keys}),
                "w": [k[0] for k in keys],
                "s": [k[1] for k in keys],
            },
        )
        return [event_of(r) for r in rows]

    @translating
    async def purge(self, retention_s: float, limit: int = 10_000) -> int:
        """Delete events, deliveries and attempts older than the retention, a shard group at
        a time (each a transaction of its own node); returns events deleted (at most `limit`
        per group and call, so a long backlog never makes one long lock)."""
        deleted = 0
        for k in self.feed_keys():
            params = {"after": retention_s, "n": limit, "k": k}
            async with self.engine.begin() as conn:
                result = await conn.execute(
                    text(
                        "DELETE FROM events WHERE feed_key = :k AND (workspace_id, sequence) IN"
                        " (SELECT workspace_id, sequence FROM events WHERE feed_key = :k"
                        "  AND created_at < now() - make_interval(secs => :after)"
                        "  ORDER BY created_at LIMIT :n)"
                    ),
                    params,
                )
                deleted += result.rowcount
                for table, column in (
                    ("webhook_deliveries", "created_at"),
                    ("webhook_attempts", "attempted_at"),
                ):
                    await conn.execute(
                        text(
                            f"DELETE FROM {table} WHERE feed_key = :k AND {column} <"
                            " now() - make_interval(secs => :after)"
                        ),
                        params,
                    )
        return deleted
