"""The webhook delivery log as the Events API reads and extends it: attempts and replays.

Attempts are listed newest first, by endpoint and/or event; a replay queues past events
again as new deliveries (keyed by its request id, so a retried ReplayEvents queues nothing
twice). The dispatcher's own work on the same tables is in meter.storage.deliveries_repo.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import Any

from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine

from meter import errors
from meter.events.model import Attempt, DeliveryState, Endpoint, event_id, parse_event_id
from meter.storage.db import Repository, translating
from meter.storage.shards import OneShard, Shards

# An endpoint's filters (event types :types, workspaces :wss) on events; empty: every one.
TYPE_FILTER = "(cardinality(CAST(:types AS text[])) = 0 OR type = ANY(CAST(:types AS text[])))"
WORKSPACE_FILTER = (
    "(cardinality(CAST(:wss AS text[])) = 0 OR workspace_id = ANY(CAST(:wss AS text[])))"
)


class DeliveryLogRepo(Repository):
    def __init__(self, engine: AsyncEngine, shards: Shards | None = None) -> None:
        super().__init__(engine)
        self.shards = shards or OneShard()

    @translating
    async def attempts(
        self,
        endpoint_id: str,
        event: str,
        limit: int,
        before: tuple[int, int] | None,
    ) -> list[Attempt]:
        """Attempts newest first, by endpoint and/or event id."""
        where: list[str] = []
        params: dict[str, Any] = {"n": limit}
        if endpoint_id:
            where.append("a.endpoint_id = :e")
            params["e"] = endpoint_id
        if event:
            where.append("a.event_id = :ev")
            params["ev"] = event
        if before is not None:
            where.append("(a.delivery_id, a.attempt) < (:bd, :ba)")
            params.update(bd=before[0], ba=before[1])
        rows = await self.fetch_all(
            text(
                "SELECT a.*, d.state, d.replay, d.attempts AS made FROM webhook_attempts a"
                " JOIN webhook_deliveries d ON d.feed_key = a.feed_key"
                "  AND d.delivery_id = a.delivery_id"
                f" WHERE {' AND '.join(where)}"
                " ORDER BY a.delivery_id DESC, a.attempt DESC LIMIT :n"
            ),
            params,
        )
        return [_attempt(r) for r in rows]

    @translating
    async def replay(
        self,
        endpoint: Endpoint,
        since: datetime | None,
        ids: Sequence[str],
        request_id: str,
        fp: str,
    ) -> int:
        """Queue deliveries of past events to one endpoint; returns how many.

        Raises: MeterError REQUEST_ID_REUSED, EVENT_NOT_FOUND.
        """
        keys = [parse_event_id(i) for i in ids]
        async with self.engine.begin() as conn:
            if request_id:
                row = (
                    await conn.execute(
                        text(
                            "SELECT fingerprint, queued FROM webhook_replays"
                            " WHERE endpoint_id = :e AND request_id = :r"
                        ),
                        {"e": endpoint.endpoint_id, "r": request_id},
                    )
                ).one_or_none()
                if row is not None:
                    if row.fingerprint != fp:
                        raise errors.request_id_reused(request_id)
                    return int(row.queued)
            if ids:
                # A shard group at a time: each insert reads and writes one group's rows.
                by_group: dict[str, list[tuple[str, int]]] = {}
                for k in keys:
                    if k is not None:
                        by_group.setdefault(self.shards.group(k[0]).feed_key, []).append(k)
                present: set[str] = set()
                for feed_key, group_keys in by_group.items():
                    found = (
                        await conn.execute(
                            text(
                                "INSERT INTO webhook_deliveries (feed_key, workspace_id,"
                                " sequence, endpoint_id, replay)"
                                " SELECT e.feed_key, e.workspace_id, e.sequence, :ep, true"
                                " FROM events e WHERE e.feed_key = :k"
                                " AND (e.workspace_id, e.sequence) IN (SELECT * FROM"
                                "  unnest(CAST(:w AS text[]), CAST(:s AS int8[])))"
                                " RETURNING workspace_id, sequence"
                            ),
                            {
                                "ep": endpoint.endpoint_id,
                                "k": feed_key,
                                "w": [k[0] for k in group_keys],
                                "s": [k[1] for k in group_keys],
                            },
                        )
                    ).all()
                    present |= {event_id(r.workspace_id, r.sequence) for r in found}
                missing = [i for i in ids if i not in present]
                if missing:
                    raise errors.not_found(
                        "EVENT_NOT_FOUND",
                        f"no such event (or past retention): {', '.join(missing[:5])}",
                        event_ids=",".join(missing[:20]),
                    )
                queued = len(present)
            else:
                queued = 0
                for feed_key in [g.feed_key for g in self.shards.map.groups]:
                    result = await conn.execute(
                        text(
                            "INSERT INTO webhook_deliveries (feed_key, workspace_id, sequence,"
                            " endpoint_id, replay) SELECT feed_key, workspace_id, sequence, :ep,"
                            " true FROM events WHERE feed_key = :k AND created_at >= :since"
                            f" AND {TYPE_FILTER} AND {WORKSPACE_FILTER}"
                        ),
                        {
                            "ep": endpoint.endpoint_id,
                            "k": feed_key,
                            "since": since,
                            "types": list(endpoint.event_types),
                            "wss": list(endpoint.workspace_ids),
                        },
                    )
                    queued += result.rowcount
            if request_id:
                await conn.execute(
                    text(
                        "INSERT INTO webhook_replays (endpoint_id, request_id, fingerprint,"
                        " queued) VALUES (:e, :r, :fp, :q)"
                    ),
                    {"e": endpoint.endpoint_id, "r": request_id, "fp": fp, "q": queued},
                )
        return queued


def _attempt(r: Any) -> Attempt:
    state = DeliveryState(r.state)
    # Only the newest attempt of a pending delivery has a next attempt still to come.
    latest = r.attempt == r.made
    return Attempt(
        endpoint_id=r.endpoint_id,
        event_id=r.event_id,
        event_type=r.event_type,
        attempt=r.attempt,
        attempted_at=r.attempted_at,
        status=r.status,
        error=r.error,
        latency_ms=r.latency_ms,
        next_attempt_at=r.next_attempt_at if latest and state is DeliveryState.PENDING else None,
        state=state if latest else _earlier_state(r),
        replay=r.replay,
        delivery_id=r.delivery_id,
    )


def _earlier_state(r: Any) -> DeliveryState:
    """An attempt before a delivery's newest one left it pending, or delivered it (a lease
    that ran out after a slow 2xx is attempted again)."""
    return DeliveryState.PENDING if r.error else DeliveryState.DELIVERED
