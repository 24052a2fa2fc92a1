"""The dispatcher's side of the webhook tables: fan-out, leases, attempts, endpoint health.

Replicas share the work through row locks taken with SKIP LOCKED: an endpoint's feed
position while one replica copies new events into deliveries, a delivery while one replica
leases it. Nothing here touches a workspace row, so deliveries never wait for the ledger,
nor it for them. SendTestEvent's attempt, which the dispatcher makes at once, is logged here
too, as a delivery of its own.
"""

from __future__ import annotations

import orjson
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from meter.events import types
from meter.events.model import Attempt, Claimed, DeliveryState, Endpoint, FeedPosition
from meter.storage.db import Repository, translating
from meter.storage.events_repo import EventsRepo, event_of, write_global_event


class DeliveriesRepo(Repository):
    def __init__(self, engine: AsyncEngine) -> None:
        super().__init__(engine)
        self.feed = EventsRepo(engine)

    @translating
    async def fan_out(self, limit: int = 500) -> int:
        """Turn new events into pending deliveries for every enabled endpoint that wants
        them; each endpoint's position is leased (FOR UPDATE SKIP LOCKED), so replicas
        share the work and none copies an event twice. Returns how many were queued."""
        queued = 0
        async with self.engine.begin() as conn:
            endpoints = (
                await conn.execute(
                    text(
                        "SELECT endpoint_id, event_types, workspace_ids,"
                        " feed_txid::text AS pos_txid, feed_workspace_id AS pos_ws,"
                        " feed_sequence AS pos_seq FROM webhook_endpoints"
                        " WHERE enabled ORDER BY endpoint_id FOR UPDATE SKIP LOCKED"
                    )
                )
            ).all()
            for ep in endpoints:
                pos: FeedPosition = (int(ep.pos_txid), ep.pos_ws, ep.pos_seq)
                while True:
                    events, new = await self.feed.read(
                        conn, pos, limit, "", ep.workspace_ids, ep.event_types
                    )
                    if events:
                        await conn.execute(
                            text(
                                "INSERT INTO webhook_deliveries (workspace_id, sequence,"
                                " endpoint_id) SELECT w, s, :ep"
                                " FROM unnest(CAST(:w AS text[]), CAST(:s AS int8[])) AS k(w, s)"
                            ),
                            {
                                "ep": ep.endpoint_id,
                                "w": [e.workspace_id for e in events],
                                "s": [e.sequence for e in events],
                            },
                        )
                        queued += len(events)
                    if new != pos:
                        await conn.execute(
                            text(
                                "UPDATE webhook_endpoints SET feed_txid = CAST(:t AS xid8),"
                                " feed_workspace_id = :w, feed_sequence = :s"
                                " WHERE endpoint_id = :ep"
                            ),
                            {"t": str(new[0]), "w": new[1], "s": new[2], "ep": ep.endpoint_id},
                        )
                    pos = new
                    if len(events) < limit:
                        break
        return queued

    @translating
    async def due(self) -> dict[str, float]:
        """Seconds until each enabled endpoint's earliest pending delivery is due (<= 0: now)."""
        return await self._seconds_by_endpoint(
            "SELECT d.endpoint_id,"
            " extract(epoch FROM min(d.next_attempt_at) - now()) AS s"
            " FROM webhook_deliveries d JOIN webhook_endpoints e USING (endpoint_id)"
            " WHERE d.state = 0 AND e.enabled GROUP BY d.endpoint_id"
        )

    @translating
    async def claim(self, endpoint_id: str, limit: int, lease_s: float) -> list[Claimed]:
        """Lease up to `limit` due deliveries of one endpoint for one attempt each.

        The lease is the delivery's next_attempt_at moved past the attempt's timeout: a
        replica that dies mid-attempt leaves the delivery to be retried when it runs out.
        """
        async with self.engine.begin() as conn:
            rows = await conn.execute(
                text(
                    "UPDATE webhook_deliveries d SET attempts = d.attempts + 1,"
                    " next_attempt_at = now() + make_interval(secs => :lease)"
                    " FROM (SELECT workspace_id, delivery_id FROM webhook_deliveries"
                    "   WHERE endpoint_id = :ep AND state = 0 AND next_attempt_at <= now()"
                    "   ORDER BY next_attempt_at LIMIT :n FOR UPDATE SKIP LOCKED) c, events e"
                    " WHERE d.workspace_id = c.workspace_id AND d.delivery_id = c.delivery_id"
                    "   AND e.workspace_id = d.workspace_id AND e.sequence = d.sequence"
                    " RETURNING d.workspace_id, d.delivery_id, d.attempts, d.replay, e.sequence,"
                    "   e.type, e.created_at, e.data::text AS data"
                ),
                {"ep": endpoint_id, "n": limit, "lease": lease_s},
            )
            return [
                Claimed(r.workspace_id, r.delivery_id, r.attempts, r.replay, event_of(r))
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
            next_at = (
                await conn.execute(
                    text(
                        "UPDATE webhook_deliveries SET state = :st,"
                        " next_attempt_at = CASE WHEN :st = 0"
                        "   THEN now() + make_interval(secs => :retry) ELSE next_attempt_at END,"
                        " finished_at = CASE WHEN :st = 0 THEN NULL ELSE now() END"
                        " WHERE workspace_id = :w AND delivery_id = :d AND attempts = :a"
                        " RETURNING CASE WHEN state = 0 THEN next_attempt_at END AS next_at"
                    ),
                    {
                        "st": int(state),
                        "retry": retry_in_s or 0.0,
                        "w": claimed.workspace_id,
                        "d": claimed.delivery_id,
                        "a": claimed.attempt,
                    },
                )
            ).one_or_none()
            await conn.execute(
                text(
                    "INSERT INTO webhook_attempts (workspace_id, delivery_id, attempt,"
                    " endpoint_id, event_id, event_type, attempted_at, status, error,"
                    " latency_ms, next_attempt_at) VALUES (:w, :d, :a, :ep, :ev, :type,"
                    " now() - make_interval(secs => :lat / 1000.0), :status, :error, :lat, :next)"
                    " ON CONFLICT DO NOTHING"
                ),
                {
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
            disabled = await self._endpoint_health(conn, endpoint, ok, error, disable_after_s)
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
                        "WITH d AS (INSERT INTO webhook_deliveries (workspace_id, sequence,"
                        "  endpoint_id, state, attempts, finished_at)"
                        "  VALUES ('', 0, :ep, :st, 1, now()) RETURNING delivery_id)"
                        " INSERT INTO webhook_attempts (workspace_id, delivery_id, attempt,"
                        " endpoint_id, event_id, event_type, attempted_at, status, error,"
                        " latency_ms) SELECT '', d.delivery_id, 1, :ep, :ev, :type,"
                        " now() - make_interval(secs => :lat / 1000.0), :status, :error, :lat"
                        " FROM d RETURNING *"
                    ),
                    {
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
                    "UPDATE webhook_endpoints SET failing_since = coalesce(failing_since, now())"
                    " WHERE endpoint_id = :e RETURNING enabled,"
                    " failing_since <= now() - make_interval(secs => :after) AS expired,"
                    " failing_since, url"
                ),
                {"e": endpoint.endpoint_id, "after": disable_after_s},
            )
        ).one_or_none()
        if row is None or not row.enabled or not row.expired:
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
        return await self._seconds_by_endpoint(
            "SELECT e.endpoint_id, coalesce(extract(epoch FROM now() - ("
            "  SELECT min(ev.created_at) FROM webhook_deliveries d JOIN events ev"
            "   ON ev.workspace_id = d.workspace_id AND ev.sequence = d.sequence"
            "  WHERE d.endpoint_id = e.endpoint_id AND d.state = 0)), 0) AS s"
            " FROM webhook_endpoints e WHERE e.enabled"
        )

    async def _seconds_by_endpoint(self, sql: str) -> dict[str, float]:
        """A statement's rows of (endpoint_id, s), as seconds by endpoint id."""
        return {r.endpoint_id: float(r.s) for r in await self.fetch_all(text(sql))}
