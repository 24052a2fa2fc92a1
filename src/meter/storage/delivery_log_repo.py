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

from meter import errors
from meter.events.model import Attempt, DeliveryState, Endpoint, event_id, parse_event_id
from meter.storage.db import Repository, translating
from meter.storage.events_repo import TYPE_FILTER, WORKSPACE_FILTER


class DeliveryLogRepo(Repository):
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
                " JOIN webhook_deliveries d ON d.workspace_id = a.workspace_id"
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
                ws = [k[0] if k else "" for k in keys]
                seqs = [k[1] if k else -1 for k in keys]
                found = (
                    await conn.execute(
                        text(
                            "INSERT INTO webhook_deliveries (workspace_id, sequence, endpoint_id,"
                            " replay) SELECT e.workspace_id, e.sequence, :ep, true FROM events e"
                            " JOIN unnest(CAST(:w AS text[]), CAST(:s AS int8[])) AS k(w, s)"
                            " ON e.workspace_id = k.w AND e.sequence = k.s"
                            " RETURNING workspace_id, sequence"
                        ),
                        {"ep": endpoint.endpoint_id, "w": ws, "s": seqs},
                    )
                ).all()
                present = {event_id(r.workspace_id, r.sequence) for r in found}
                missing = [i for i in ids if i not in present]
                if missing:
                    raise errors.not_found(
                        "EVENT_NOT_FOUND",
                        f"no such event (or past retention): {', '.join(missing[:5])}",
                        event_ids=",".join(missing[:20]),
                    )
                queued = len(found)
            else:
                result = await conn.execute(
                    text(
                        "INSERT INTO webhook_deliveries (workspace_id, sequence, endpoint_id,"
                        " replay) SELECT workspace_id, sequence, :ep, true FROM events"
                        f" WHERE created_at >= :since AND {TYPE_FILTER} AND {WORKSPACE_FILTER}"
                    ),
                    {
                        "ep": endpoint.endpoint_id,
                        "since": since,
                        "types": list(endpoint.event_types),
                        "wss": list(endpoint.workspace_ids),
                    },
                )
                queued = result.rowcount
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
