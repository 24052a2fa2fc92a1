"""Member limits and auto top-up rules: their settings and what callers read of them.

Setting a member limit is its own short transaction under the workspace's lock, the lock
every batch takes: a batch sees the limits either before or after, never half. The first
limit of a workspace starts its members' running spend from their holds (what they hold,
and what they were charged in the current day, week and month); batches keep it from then
on, until the last limit goes.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine

from meter import errors
from meter.ledger.clock import Clock
from meter.ledger.model import Period, TopUpView
from meter.ledger.policies import (
    MemberLimitView,
    Spend,
    TopUp,
    limit_views,
    period_start,
)
from meter.storage import ledger_rows
from meter.storage.db import translating


class PoliciesRepo:
    def __init__(self, engine: AsyncEngine, clock: Clock) -> None:
        self.engine = engine
        self.clock = clock

    @translating
    async def set_member_limit(
        self, workspace_id: str, actor_id: str, period: Period, limit: int | None
    ) -> MemberLimitView:
        """Raises: MeterError WORKSPACE_NOT_FOUND."""
        async with self.engine.begin() as conn:
            row = (await conn.execute(_LOCK, {"w": workspace_id})).one_or_none()
            if row is None:
                raise errors.workspace_not_found(workspace_id)
            now = self.clock.at(row.now)
            key = {"w": workspace_id, "a": actor_id, "p": int(period)}
            if limit is None:
                await conn.execute(_DELETE_LIMIT, key)
            else:
                await conn.execute(_UPSERT_LIMIT, {**key, "l": limit})
            count = (await conn.execute(_COUNT_LIMITS, {"w": workspace_id})).scalar_one()
            if count and not row.member_limits:
                await conn.execute(_CLEAR_SPEND, {"w": workspace_id})
                await conn.execute(
                    _START_SPEND,
                    {
                        "w": workspace_id,
                        "now": now,
                        "day": period_start(Period.DAY, now),
                        "week": period_start(Period.WEEK, now),
                        "month": period_start(Period.MONTH, now),
                    },
                )
            if bool(count) != row.member_limits:
                await conn.execute(_FLAG, {"w": workspace_id, "on": bool(count)})
                if not count:
                    await conn.execute(_CLEAR_SPEND, {"w": workspace_id})
            limits, spend = await self._state(conn, workspace_id, [actor_id])
        if limit is None:
            return MemberLimitView(workspace_id, actor_id, period, None, 0, 0, now)
        views = limit_views(workspace_id, limits, spend, now, [actor_id])
        return next(v for v in views if v.period is period)

    @translating
    async def member_limits(
        self, workspace_id: str, actors: Sequence[str] | None = None
    ) -> list[MemberLimitView]:
        """Every limit set (actors None), or the limits that apply to each of `actors`.

        Raises: MeterError WORKSPACE_NOT_FOUND.
        """
        async with self.engine.connect() as conn:
            row = (await conn.execute(_READ, {"w": workspace_id})).one_or_none()
            if row is None:
                raise errors.workspace_not_found(workspace_id)
            if not row.member_limits:
                return []
            wanted = None if actors is None else list(actors)
            limits, spend = await self._state(conn, workspace_id, wanted)
        return limit_views(workspace_id, limits, spend, self.clock.at(row.now), wanted)

    @translating
    async def auto_topup(self, workspace_id: str) -> TopUpView:
        """The rule, or a disabled empty one. Raises: MeterError WORKSPACE_NOT_FOUND."""
        async with self.engine.connect() as conn:
            row = (await conn.execute(_READ, {"w": workspace_id})).one_or_none()
            if row is None:
                raise errors.workspace_not_found(workspace_id)
            found = (await conn.execute(_TOPUP, {"w": workspace_id})).one_or_none()
        now = self.clock.at(row.now)
        t = TopUp(False, 0, "", 0, 0) if found is None else ledger_rows.topup(tuple(found))
        return t.view(workspace_id, now)

    async def _state(
        self, conn: Any, workspace_id: str, actors: list[str] | None
    ) -> tuple[dict[tuple[str, Period], int], dict[str, Spend]]:
        limits = {
            (r.actor_id, Period(r.period)): r.credit_limit
            for r in await conn.execute(_LIMITS, {"w": workspace_id})
        }
        names = sorted({a for a, _ in limits} | set(actors or ())) if actors is None else actors
        spend = {
            r[1]: ledger_rows.spend(tuple(r))
            for r in await conn.execute(_SPEND, {"w": workspace_id, "actors": names})
        }
        return limits, spend


_LOCK = text(
    "SELECT now() AS now, member_limits FROM workspaces WHERE workspace_id = :w FOR UPDATE"
)
_READ = text("SELECT now() AS now, member_limits FROM workspaces WHERE workspace_id = :w")
_UPSERT_LIMIT = text(
    "INSERT INTO member_limits (workspace_id, actor_id, period, credit_limit)"
    " VALUES (:w, :a, :p, :l) ON CONFLICT (workspace_id, actor_id, period)"
    " DO UPDATE SET credit_limit = EXCLUDED.credit_limit, updated_at = now()"
)
_DELETE_LIMIT = text(
    "DELETE FROM member_limits WHERE workspace_id = :w AND actor_id = :a AND period = :p"
)
_COUNT_LIMITS = text("SELECT count(*) FROM member_limits WHERE workspace_id = :w")
_CLEAR_SPEND = text("DELETE FROM member_spend WHERE workspace_id = :w")
_FLAG = text("UPDATE workspaces SET member_limits = :on WHERE workspace_id = :w")
# Each member's spend as batches keep it: what its HELD holds hold, and what its charges of
# the current periods charged (less refunds), by the holds' finish times.
_START_SPEND = text(
    """
INSERT INTO member_spend
  (workspace_id, actor_id, held, day_used, week_used, month_used, noticed, updated_at)
SELECT :w, actor_id,
  coalesce(sum(amount) FILTER (WHERE state = 1), 0),
  coalesce(sum(charged - refunded) FILTER (WHERE state = 2 AND finished_at >= :day), 0),
  coalesce(sum(charged - refunded) FILTER (WHERE state = 2 AND finished_at >= :week), 0),
  coalesce(sum(charged - refunded) FILTER (WHERE state = 2 AND finished_at >= :month), 0),
  0, :now
FROM holds
WHERE workspace_id = :w AND actor_id <> ''
  AND (state = 1 OR (state = 2 AND finished_at >= least(:week, :month)))
GROUP BY actor_id
"""
)
_LIMITS = text("SELECT actor_id, period, credit_limit FROM member_limits WHERE workspace_id = :w")
_SPEND = text(
    "SELECT workspace_id, actor_id, held, day_used, week_used, month_used, noticed, updated_at"
    " FROM member_spend WHERE workspace_id = :w AND actor_id = ANY(:actors)"
)
_TOPUP = text(
    "SELECT workspace_id, enabled, threshold, package, amount, monthly_limit, failures, seq,"
    " outstanding, requested_at, month_start, month_count, last_failed"
    " FROM auto_topups WHERE workspace_id = :w"
)
