"""Budgets (member limits among them) and auto top-up rules: their settings and reads.

Setting or deleting a budget is its own short transaction under the workspace's lock, the
lock every batch takes: a batch sees the budgets either before or after, never half. A new
or replaced budget starts its spend from the holds there are (what each value of its scope
holds, and what it was charged in the current period); batches keep it from then on. The
workspace's `budgets` flag tells batches whether to load any.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import Any

from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from meter import errors
from meter.ledger.budgets import (
    ACTOR_KEY,
    MAX_BUDGETS,
    Budget,
    BudgetSpend,
    BudgetStanding,
    BudgetView,
    budget_views,
    member_budget_id,
    period_start,
    standings,
)
from meter.ledger.clock import Clock
from meter.ledger.model import Period, TopUpView
from meter.ledger.policies import MemberLimitView, TopUp, member_limit_views
from meter.storage import ledger_rows
from meter.storage.db import translating


class PoliciesRepo:
    def __init__(self, engine: AsyncEngine, clock: Clock) -> None:
        self.engine = engine
        self.clock = clock

    @translating
    async def set_budget(self, workspace_id: str, budget: Budget) -> BudgetView:
        """Create or replace a budget; its spend starts from the holds there are.

        Raises: MeterError WORKSPACE_NOT_FOUND, TOO_MANY_BUDGETS (a new one past
        MAX_BUDGETS: each is checked on every hold of the workspace).
        """
        async with self.engine.begin() as conn:
            now = await self._lock(conn, workspace_id)
            await self._put(conn, workspace_id, budget, now)
            found, spend = await self._state(conn, workspace_id, budget.budget_id)
        return budget_views(workspace_id, found, spend, now)[0]

    @translating
    async def delete_budget(self, workspace_id: str, budget_id: str) -> bool:
        """Whether there was such a budget. Raises: MeterError WORKSPACE_NOT_FOUND."""
        async with self.engine.begin() as conn:
            await self._lock(conn, workspace_id)
            return await self._delete(conn, workspace_id, budget_id)

    @translating
    async def budgets(self, workspace_id: str) -> list[BudgetView]:
        """Every budget with its spend now. Raises: MeterError WORKSPACE_NOT_FOUND."""
        async with self.engine.connect() as conn:
            now = await self._read(conn, workspace_id)
            found, spend = await self._state(conn, workspace_id)
        return budget_views(workspace_id, found, spend, now)

    @translating
    async def standings(
        self, workspace_id: str, scope_key: str, values: Sequence[str]
    ) -> dict[str, list[BudgetStanding]]:
        """By value of `scope_key`, the budgets that apply to it as they stand now."""
        async with self.engine.connect() as conn:
            now = await self._read(conn, workspace_id)
            found, spend = await self._state(conn, workspace_id)
        return {v: standings(found, spend, now, scope_key, v) for v in values}

    @translating
    async def set_member_limit(
        self, workspace_id: str, actor_id: str, period: Period, limit: int | None
    ) -> MemberLimitView:
        """A member's limit ('' = every member's default) as the budget
        `member:<actor or *>:<period>`; None removes it.

        Raises: MeterError WORKSPACE_NOT_FOUND, TOO_MANY_BUDGETS.
        """
        budget_id = member_budget_id(actor_id, period)
        async with self.engine.begin() as conn:
            now = await self._lock(conn, workspace_id)
            if limit is None:
                await self._delete(conn, workspace_id, budget_id)
                return MemberLimitView(workspace_id, actor_id, period, None, 0, 0, now)
            budget = Budget(budget_id, ACTOR_KEY, actor_id, period, limit, warn_at=())
            await self._put(conn, workspace_id, budget, now)
            found, spend = await self._state(conn, workspace_id, budget_id)
        [view] = member_limit_views(workspace_id, found, spend, now)
        return view

    @translating
    async def member_limits(
        self, workspace_id: str, actors: Sequence[str] | None = None
    ) -> list[MemberLimitView]:
        """Every member limit set (actors None), or the ones that apply to each of `actors`.

        Raises: MeterError WORKSPACE_NOT_FOUND.
        """
        async with self.engine.connect() as conn:
            now = await self._read(conn, workspace_id)
            found, spend = await self._state(conn, workspace_id)
        return member_limit_views(
            workspace_id, found, spend, now, None if actors is None else list(actors)
        )

    @translating
    async def auto_topup(self, workspace_id: str) -> TopUpView:
        """The rule, or a disabled empty one. Raises: MeterError WORKSPACE_NOT_FOUND."""
        async with self.engine.connect() as conn:
            now = await self._read(conn, workspace_id)
            found = (await conn.execute(_TOPUP, {"w": workspace_id})).one_or_none()
        t = TopUp(False, 0, "", 0, 0) if found is None else ledger_rows.topup(tuple(found))
        return t.view(workspace_id, now)

    async def _lock(self, conn: AsyncConnection, workspace_id: str) -> datetime:
        """Lock the workspace's row (as every batch does); the ledger's time now."""
        row = (await conn.execute(_LOCK, {"w": workspace_id})).one_or_none()
        if row is None:
            raise errors.workspace_not_found(workspace_id)
        return self.clock.at(row.now)

    async def _read(self, conn: AsyncConnection, workspace_id: str) -> datetime:
        row = (await conn.execute(_READ, {"w": workspace_id})).one_or_none()
        if row is None:
            raise errors.workspace_not_found(workspace_id)
        return self.clock.at(row.now)

    async def _put(
        self, conn: AsyncConnection, workspace_id: str, b: Budget, now: datetime
    ) -> None:
        start = period_start(b.period, now)
        key = {"w": workspace_id, "b": b.budget_id}
        others = (await conn.execute(_COUNT_OTHER_BUDGETS, key)).scalar_one()
        if others >= MAX_BUDGETS:
            raise errors.precondition(
                "TOO_MANY_BUDGETS",
                f"the workspace has {others} budgets, the most it may have (each is checked"
                " on every hold): delete one, or replace one by its budget_id",
                limit=str(MAX_BUDGETS),
            )
        await conn.execute(
            _UPSERT_BUDGET,
            {
                **key,
                "k": b.scope_key,
                "v": b.scope_value,
                "p": int(b.period),
                "l": b.limit,
                "warn": list(b.warn_at),
                "on": b.enabled,
            },
        )
        await conn.execute(_CLEAR_SPEND, key)
        await conn.execute(
            _START_SPEND, {**key, "k": b.scope_key, "v": b.scope_value, "start": start}
        )
        await conn.execute(_FLAG, {"w": workspace_id, "on": True})

    async def _delete(self, conn: AsyncConnection, workspace_id: str, budget_id: str) -> bool:
        key = {"w": workspace_id, "b": budget_id}
        found = (await conn.execute(_DELETE_BUDGET, key)).rowcount
        await conn.execute(_CLEAR_SPEND, key)
        left = (await conn.execute(_COUNT_BUDGETS, {"w": workspace_id})).scalar_one()
        if not left:
            await conn.execute(_FLAG, {"w": workspace_id, "on": False})
        return bool(found)

    async def _state(
        self, conn: AsyncConnection, workspace_id: str, budget_id: str | None = None
    ) -> tuple[list[Budget], dict[tuple[str, str], BudgetSpend]]:
        params: dict[str, Any] = {"w": workspace_id, "b": budget_id}
        budgets = [ledger_rows.budget(tuple(r)) for r in await conn.execute(_BUDGETS, params)]
        spend = {}
        for r in await conn.execute(_SPEND, params):
            s = ledger_rows.budget_spend(tuple(r))
            spend[(s.budget_id, s.value)] = s
        return budgets, spend


_LOCK = text("SELECT now() AS now FROM workspaces WHERE workspace_id = :w FOR UPDATE")
_READ = text("SELECT now() AS now FROM workspaces WHERE workspace_id = :w")
_UPSERT_BUDGET = text(
    "INSERT INTO budgets (workspace_id, budget_id, scope_key, scope_value, period, credit_limit,"
    " warn_at, enabled, updated_at)"
    " VALUES (:w, :b, :k, :v, :p, :l, CAST(:warn AS int2[]), :on, now())"
    " ON CONFLICT (workspace_id, budget_id) DO UPDATE SET scope_key = EXCLUDED.scope_key,"
    " scope_value = EXCLUDED.scope_value, period = EXCLUDED.period,"
    " credit_limit = EXCLUDED.credit_limit, warn_at = EXCLUDED.warn_at,"
    # Not now() here: Citus takes no function but IMMUTABLE ones in DO UPDATE SET.
    " enabled = EXCLUDED.enabled, updated_at = EXCLUDED.updated_at"
)
_DELETE_BUDGET = text("DELETE FROM budgets WHERE workspace_id = :w AND budget_id = :b")
_COUNT_BUDGETS = text("SELECT count(*) FROM budgets WHERE workspace_id = :w")
_COUNT_OTHER_BUDGETS = text(
    "SELECT count(*) FROM budgets WHERE workspace_id = :w AND budget_id <> :b"
)
_CLEAR_SPEND = text("DELETE FROM budget_spend WHERE workspace_id = :w AND budget_id = :b")
_FLAG = text("UPDATE workspaces SET budgets = :on WHERE workspace_id = :w AND budgets <> :on")
# A budget's spend per value from the holds there are: what the value's HELD holds hold, and
# what its charges of the current period charged (less refunds), by the holds' finish times.
_START_SPEND = text(
    """
INSERT INTO budget_spend (workspace_id, budget_id, scope_value, held, used, period_start)
SELECT :w, :b, v, coalesce(sum(amount) FILTER (WHERE state = 1), 0),
  coalesce(sum(charged - refunded) FILTER (WHERE state = 2 AND finished_at >= :start), 0),
  :start
FROM (SELECT CASE WHEN :k = 'actor_id' THEN actor_id ELSE labels->>:k END AS v,
             state, amount, charged, refunded, finished_at
        FROM holds
       WHERE workspace_id = :w AND (state = 1 OR (state = 2 AND finished_at >= :start))) h
WHERE v IS NOT NULL AND v <> '' AND (:v = '' OR v = :v)
GROUP BY v
"""
)
_BUDGETS = text(
    "SELECT workspace_id, budget_id, scope_key, scope_value, period, credit_limit, warn_at,"
    " enabled FROM budgets WHERE workspace_id = :w"
    " AND (CAST(:b AS text) IS NULL OR budget_id = :b) ORDER BY budget_id"
)
_SPEND = text(
    "SELECT workspace_id, budget_id, scope_value, held, used, period_start, warned, exceeded"
    " FROM budget_spend WHERE workspace_id = :w AND (CAST(:b AS text) IS NULL OR budget_id = :b)"
)
_TOPUP = text(
    "SELECT workspace_id, enabled, threshold, package, amount, monthly_limit, failures, seq,"
    " outstanding, requested_at, month_start, month_count, last_failed"
    " FROM auto_topups WHERE workspace_id = :w"
)
