"""The dispatcher's side of the webhook tables: fan-out, leases, attempts, endpoint health.

Replicas share the work through row locks taken with SKIP LOCKED: an endpoint's feed
position while one replica copies new events into deliveries, a delivery while one replica
leases it. Nothing here touches a workspace row, so deliveries never wait for the ledger,
nor it for them. SendTestEvent's attempt, which the dispatcher makes at once, is logged here
too, as a delivery of its own.
"""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any

import orjson
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from meter.events import types
from meter.events.model import Attempt, Claimed, DeliveryState, Endpoint, StoredEvent
from meter.storage.db import Repository, translating
from meter.storage.events_repo import EventsRepo, event_of, write_global_event
from meter.storage.shards import Shards

_NOW = text("SELECT now()")


class DeliveriesRepo(Repository):
    def __init__(self, engine: AsyncEngine, shards: Shards | None = None) -> None:
        super().__init__(engine)
        self.feed = EventsRepo(engine, shards)
        self.shards = self.feed.shards

    @translating
    async def fan_out(self, limit: int = 500) -> int:
        """Turn new events into pending deliveries for every enabled endpoint that wants
        them, a shard group at a time (each a transaction of the group's node alone). An
        endpoint's position in a group's feed is leased (FOR UPDATE SKIP LOCKED), so replicas
        share the work, group by group, and none copies an event twice. Returns how many
        were queued."""
        queued = 0
        for k in self.feed.feed_keys():
            queued += await self._fan_out_group(k, limit)
        return queued

    async def _fan_out_group(self, k: str, limit: int) -> int:
        queued = 0
        async with self.engine.begin() as conn:
            cursors = (
                await conn.execute(
                    text(
                        "SELECT c.endpoint_id, c.pos, e.event_types, e.workspace_ids"
                        " FROM webhook_cursors c JOIN webhook_endpoints e USING (endpoint_id)"
                        " WHERE c.feed_key = :k AND e.enabled ORDER BY c.endpoint_id"
                        " FOR UPDATE OF c SKIP LOCKED"
                    ),
                    {"k": k},
                )
            ).all()
            if not cursors:
                return 0
            pos = {c.endpoint_id: c.pos for c in cursors}
            while True:
                start = min(pos.values())
                found = await self.feed.group_feed(conn, k, start, limit)
                rows: list[tuple[str, int, str]] = []
                for c in cursors:
                    for p, ev in found:
                        if p > pos[c.endpoint_id] and _wants(c, ev):
                            rows.append((ev.workspace_id, ev.sequence, c.endpoint_id))
                    if found:
                        pos[c.endpoint_id] = max(pos[c.endpoint_id], found[-1][0])
                if rows:
                    await conn.execute(
                        text(
                            "INSERT INTO webhook_deliveries (feed_key, workspace_id, sequence,"
                            " endpoint_id) SELECT :k, w, s, ep FROM unnest(CAST(:w AS text[]),"
                            " CAST(:s AS int8[]), CAST(:ep AS text[])) AS u(w, s, ep)"
                        ),
                        {
                            "k": k,
                            "w": [r[0] for r in rows],
                            "s": [r[1] for r in rows],
                            "ep": [r[2] for r in rows],
                        },
                    )
                    queued += len(rows)
                if len(found) < limit:
                    break
            moved = [c.endpoint_id for c in cursors if pos[c.endpoint_id] != c.pos]
            if moved:
                await conn.execute(
                    text(
                        "UPDATE webhook_cursors c SET pos = u.pos"
                        " FROM unnest(CAST(:ep AS text[]), CAST(:p AS int8[])) AS u(ep, pos)"
                        " WHERE c.feed_key = :k AND c.endpoint_id = u.ep"
                    ),
                    {"k": k, "ep": moved, "p": [pos[e] for e in moved]},
                )
        return queued

    @translating
    async def due(self) -> dict[str, dict[str, float]]:
        """By enabled endpoint, the shard groups that have pending deliveries for it, each
        with the seconds until its earliest one is due (<= 0: now)."""
        out: dict[str, dict[str, float]] = {}
        rows = await self.fetch_all(
            text(
                "SELECT d.endpoint_id, d.feed_key,"
                " extract(epoch FROM min(d.next_attempt_at) - now()) AS s"
                " FROM webhook_deliveries d JOIN webhook_endpoints e USING (endpoint_id)"
                " WHERE d.state = 0 AND e.enabled GROUP BY d.endpoint_id, d.feed_key"
            )
        )
        for r in rows:
            out.setdefault(r.endpoint_id, {})[r.feed_key] = float(r.s)
        return out

    @translating
    async def claim(
        self, endpoint_id: str, feed_key: str, limit: int, lease_s: float
    ) -> list[Claimed]:
        """Lease up to `limit` due deliveries of one endpoint in one shard group for one
        attempt each.

        The lease is the delivery's next_attempt_at moved past the attempt's timeout: a
        replica that dies mid-attempt leaves the delivery to be retried when it runs out.
        """
        async with self.engine.begin() as conn:
            rows = await conn.execute(
                text(
                    "UPDATE webhook_deliveries d SET attempts = d.attempts + 1,"
                    " next_attempt_at = now() + make_interval(secs => :lease)"
                    " FROM (SELECT feed_key, delivery_id FROM webhook_deliveries"
                    "   WHERE feed_key = :k AND endpoint_id = :ep AND state = 0"
                    "   AND next_attempt_at <= now()"
                    "   ORDER BY next_attempt_at LIMIT :n FOR UPDATE SKIP LOCKED) c, events e"
                    " WHERE d.feed_key = :k AND d.feed_key = c.feed_key"
                    "   AND d.delivery_id = c.delivery_id AND e.feed_key = :k"
                    "   AND e.workspace_id = d.workspace_id AND e.sequence = d.sequence"
                    " RETURNING d.feed_key, d.workspace_id, d.delivery_id, d.attempts, d.replay,"
                    "   e.sequence, e.type, e.created_at, e.data::text AS data"
                ),
                {"ep": endpoint_id, "k": feed_key, "n": limit, "lease": lease_s},
            )
            return [
                Claimed(
                    r.workspace_id, r.delivery_id, r.attempts, r.replay, event_of(r), r.feed_key
                )
                for r in rows
            ]

    @translating
    async def record(
        self,
        endpoint: Endpoint,
        claimed: Claimed,
        status: int,
        error: str,
        latency_ms: int,
        retry_in_s: float | None,
        disable_after_s: float,
    ) -> tuple[DeliveryState, bool]:
        """Log an attempt and settle its delivery: delivered, retried after `retry_in_s`, or
        failed (retry_in_s None). A failure of an endpoint failing for `disable_after_s`
        disables it and writes webhook.endpoint_disabled, in the same transaction.

        Returns the delivery's state and whether the endpoint was disabled now.
        """
        ok = not error
        state = (
            DeliveryState.DELIVERED
            if ok
            else (DeliveryState.PENDING if retry_in_s is not None else DeliveryState.FAILED)
        )
        async with self.engine.begin() as conn:
            # The transaction's time, read once and passed on: Citus takes no now() inside a
            # CASE, a COALESCE or a RETURNING list (on PostgreSQL it is the same time).
            now = (await conn.execute(_NOW)).scalar_one()
            next_at = (
                await conn.execute(
                    text(
                        "UPDATE webhook_deliveries SET state = :st,"
                        " next_attempt_at = CASE WHEN :st = 0"
                        "   THEN CAST(:retry_at AS timestamptz) ELSE next_attempt_at END,"
                        " finished_at = CASE WHEN :st = 0 THEN NULL"
                        "   ELSE CAST(:now AS timestamptz) END"
                        " WHERE feed_key = :k AND delivery_id = :d AND attempts = :a"
                        " RETURNING CASE WHEN state = 0 THEN next_attempt_at END AS next_at"
                    ),
                    {
                        "st": int(state),
                        "retry_at": now + timedelta(seconds=retry_in_s or 0.0),
                        "now": now,
                        "k": claimed.feed_key,
                        "d": claimed.delivery_id,
                        "a": claimed.attempt,
                    },
                )
            ).one_or_none()
            await conn.execute(
                text(
                    "INSERT INTO webhook_attempts (feed_key, workspace_id, delivery_id, attempt,"
                    " endpoint_id, event_id, event_type, attempted_at, status, error,"
                    " latency_ms, next_attempt_at) VALUES (:k, :w, :d, :a, :ep, :ev, :type,"
                    " :at, :status, :error, :lat, :next)"
                    " ON CONFLICT DO NOTHING"
                ),
                {
                    "at": now - timedelta(milliseconds=latency_ms),
                    "k": claimed.feed_key,
                    "w": claimed.workspace_id,
                    "d": claimed.delivery_id,
                    "a": claimed.attempt,
                    "ep": endpoint.endpoint_id,
                    "ev": claimed.event.event_id,
                    "type": claimed.event.type,
                    "status": status,
                    "error": error,
                    "lat": latency_ms,
                    "next": next_at.next_at if next_at is not None else None,
                },
            )
            disabled = await self._endpoint_health(conn, endpoint, ok, error, disable_after_s, now)
        return state, disabled

    @translating
    async def record_test(
        self,
        endpoint: Endpoint,
        msg_id: str,
        type_: str,
        status: int,
        error: str,
        latency_ms: int,
    ) -> Attempt:
        """Log a SendTestEvent attempt (a delivery of its own, finished at once)."""
        state = DeliveryState.FAILED if error else DeliveryState.DELIVERED
        async with self.engine.begin() as conn:
            row = (
                await conn.execute(
                    text(
                        "WITH d AS (INSERT INTO webhook_deliveries (feed_key, workspace_id,"
                        "  sequence, endpoint_id, state, attempts, finished_at)"
                        "  VALUES (:k, '', 0, :ep, :st, 1, now()) RETURNING delivery_id)"
                        " INSERT INTO webhook_attempts (feed_key, workspace_id, delivery_id,"
                        " attempt, endpoint_id, event_id, event_type, attempted_at, status, error,"
                        " latency_ms) SELECT :k, '', d.delivery_id, 1, :ep, :ev, :type,"
                        " now() - make_interval(secs => :lat / 1000.0), :status, :error, :lat"
                        " FROM d RETURNING *"
                    ),
                    {
                        "k": self.shards.group("").feed_key,
                        "ep": endpoint.endpoint_id,
                        "st": int(state),
                        "ev": msg_id,
                        "type": type_,
                        "status": status,
                        "error": error,
                        "lat": latency_ms,
                    },
                )
            ).one()
        return Attempt(
            endpoint.endpoint_id,
            row.event_id,
            row.event_type,
            1,
            row.attempted_at,
            status,
            error,
            latency_ms,
            None,
            state,
            False,
            row.delivery_id,
        )

    async def _endpoint_health(
        self,
        conn: AsyncConnection,
        endpoint: Endpoint,
        ok: bool,
        error: str,
        disable_after_s: float,
        now: datetime,
    ) -> bool:
        if ok:
            if endpoint.failing_since is None:
                # Healthy as of the dispatcher's view (at most POLL_S old): nothing to clear.
                return False
            await conn.execute(
                text(
                    "UPDATE webhook_endpoints SET failing_since = NULL"
                    " WHERE endpoint_id = :e AND failing_since IS NOT NULL"
                ),
                {"e": endpoint.endpoint_id},
            )
            return False
        row = (
            await conn.execute(
                text(
                    "UPDATE webhook_endpoints"
                    " SET failing_since = coalesce(failing_since, CAST(:now AS timestamptz))"
                    " WHERE endpoint_id = :e RETURNING enabled, failing_since, url"
                ),
                {"e": endpoint.endpoint_id, "now": now},
            )
        ).one_or_none()
        if row is None or not row.enabled:
            return False
        if row.failing_since > now - timedelta(seconds=disable_after_s):
            return False
        reason = f"failing since {row.failing_since.isoformat()}: {error}"[:500]
        await conn.execute(
            text(
                "UPDATE webhook_endpoints SET enabled = false, disabled_reason = :r,"
                " updated_at = now() WHERE endpoint_id = :e"
            ),
            {"e": endpoint.endpoint_id, "r": reason},
        )
        await write_global_event(
            conn,
            self.shards,
            types.WEBHOOK_ENDPOINT_DISABLED,
            orjson.dumps(
                {
                    "endpoint_id": endpoint.endpoint_id,
                    "url": row.url,
                    "failing_since": row.failing_since,
                    "last_error": error,
                }
            ).decode(),
        )
        return True

    @translating
    async def backlog(self) -> dict[str, float]:
        """Seconds since the oldest undelivered event, per enabled endpoint (0: none)."""
        enabled = await self.fetch_all(
            text("SELECT endpoint_id FROM webhook_endpoints WHERE enabled")
        )
        rows = await self.fetch_all(
            text(
                "SELECT d.endpoint_id, extract(epoch FROM now() - min(ev.created_at)) AS s"
                " FROM webhook_deliveries d JOIN events ev ON ev.feed_key = d.feed_key"
                "  AND ev.workspace_id = d.workspace_id AND ev.sequence = d.sequence"
                " WHERE d.state = 0 GROUP BY d.endpoint_id"
            )
        )
        oldest = {r.endpoint_id: float(r.s) for r in rows}
        return {r.endpoint_id: oldest.get(r.endpoint_id, 0.0) for r in enabled}


def _wants(cursor: Any, event: StoredEvent) -> bool:
    """Whether an endpoint's filters (event types, workspaces; empty: every one) take it."""
    types_, workspaces = cursor.event_types, cursor.workspace_ids
    return (not types_ or event.type in types_) and (
        not workspaces or event.workspace_id in workspaces
    )
