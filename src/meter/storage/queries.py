"""Read-only queries: balances, holds, history, alerts and usage.

The audit, an operator's check that recomputes whole workspaces, is in meter.storage.audit.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import replace
from datetime import datetime
from typing import Any

from sqlalchemy import Column, Row, Select, select, text
from sqlalchemy.ext.asyncio import AsyncEngine

from meter import errors
from meter.ledger.book import Book
from meter.ledger.clock import Clock
from meter.ledger.model import (
    AlertEvent,
    AlertKind,
    BalanceView,
    Entry,
    HoldState,
    HoldView,
    JournalFilter,
)
from meter.ledger.policies import TopUp
from meter.ledger.usage import UsageGrouping, UsageReport, UsageRow
from meter.storage.db import Repository, reading
from meter.storage.ledger_rows import ACCOUNT_COLUMNS, LOT_COLUMNS, ordered
from meter.storage.ledger_rows import account as _account
from meter.storage.ledger_rows import entry as _entry
from meter.storage.ledger_rows import hold as _hold
from meter.storage.ledger_rows import lot as _lot
from meter.storage.tables import alerts, holds, journal, workspaces


class LedgerQueries(Repository):
    """What the web app, the planner and operators read."""

    def __init__(self, engine: AsyncEngine, clock: Clock | None = None) -> None:
        super().__init__(engine)
        self.clock = clock or Clock()  # the ledger's: what expires soon is by its time

    @reading
    async def balance(self, workspace_id: str) -> BalanceView:
        """Raises: MeterError WORKSPACE_NOT_FOUND."""
        return (await self.balance_and_last_alert(workspace_id))[0]

    @reading
    async def balance_and_last_alert(self, workspace_id: str) -> tuple[BalanceView, int]:
        """The balance and the id of the newest alert, read from the workspace row at once.

        A watcher starts from both: alerts above that id are news, the rest history.

        Raises: MeterError WORKSPACE_NOT_FOUND.
        """
        async with self.autocommit.connect() as conn:
            row = (await conn.execute(_BALANCE, {"w": workspace_id})).one_or_none()
        if row is None:
            raise errors.workspace_not_found(workspace_id)
        return _balance_of(row, self.clock)

    @reading
    async def balances(self, workspace_ids: Sequence[str]) -> dict[str, tuple[BalanceView, int]]:
        """`balance_and_last_alert` of many workspaces in one statement (a burst of watchers
        is answered by a few queries, not one each); unknown workspaces are left out."""
        rows = await self.fetch_all(_BALANCES, {"ws": list(workspace_ids)})
        return {row.workspace_id: _balance_of(row, self.clock) for row in rows}

    @reading
    async def holds(
        self, workspace_id: str, states: Sequence[HoldState], limit: int, before: int | None
    ) -> list[HoldView]:
        """Holds newest first; `before` is the hold_id to continue below."""
        q = select(holds).where(holds.c.workspace_id == workspace_id)
        if states:
            q = q.where(holds.c.state.in_([int(s) for s in states]))
        rows = await self._newest_first(workspace_id, q, holds.c.hold_id, limit, before)
        return [_hold_view(workspace_id, r) for r in rows]

    @reading
    async def entries(
        self, workspace_id: str, flt: JournalFilter, limit: int, before: int | None
    ) -> list[Entry]:
        """Journal entries newest first; `before` is the entry_id to continue below.

        Keyset pagination on the primary key (workspace_id, entry_id): entry ids are dense per
        workspace and assigned under the workspace's lock, so they follow commit order and a
        page below a cursor never changes as new entries arrive above it.
        """
        q = select(journal).where(journal.c.workspace_id == workspace_id)
        if flt.kinds:
            q = q.where(journal.c.kind.in_(flt.kinds))
        if flt.operations:
            q = q.where(journal.c.operation.in_(flt.operations))
        if flt.actor_id:
            q = q.where(journal.c.actor_id == flt.actor_id)
        if flt.start_time is not None:
            q = q.where(journal.c.created_at >= flt.start_time)
        if flt.end_time is not None:
            q = q.where(journal.c.created_at < flt.end_time)
        rows = await self._newest_first(workspace_id, q, journal.c.entry_id, limit, before)
        return [_entry(r) for r in rows]

    @reading
    async def alerts(self, workspace_id: str, limit: int, before: int | None) -> list[AlertEvent]:
        """Alerts newest first; `before` is the event_id to continue below."""
        q = select(alerts).where(alerts.c.workspace_id == workspace_id)
        rows = await self._newest_first(workspace_id, q, alerts.c.event_id, limit, before)
        return [_alert(r) for r in rows]

    @reading
    async def written_at(
        self, workspace_ids: Sequence[str]
    ) -> tuple[dict[str, datetime], datetime]:
        """When each of the workspaces' rows was last written (its transaction's start), and
        the database's clock now."""
        async with self.autocommit.connect() as conn:
            now = (await conn.execute(text("SELECT now()"))).scalar_one()
            rows = (
                await conn.execute(
                    select(workspaces.c.workspace_id, workspaces.c.updated_at).where(
                        workspaces.c.workspace_id.in_(list(workspace_ids))
                    )
                )
            ).all()
        return {r.workspace_id: r.updated_at for r in rows}, now

    @reading
    async def alerts_after(self, workspace_id: str, after: int, limit: int) -> list[AlertEvent]:
        """Alerts with ids above `after`, oldest first (what a watcher has not sent yet)."""
        q = (
            select(alerts)
            .where(alerts.c.workspace_id == workspace_id, alerts.c.event_id > after)
            .order_by(alerts.c.event_id)
            .limit(limit)
        )
        async with self.engine.connect() as conn:
            rows = (await conn.execute(q)).all()
        return [_alert(r) for r in rows]

    @reading
    async def usage(
        self,
        workspace_id: str,
        grouping: UsageGrouping,
        start: datetime | None,
        end: datetime | None,
        members: Sequence[str] = (),
        label_key: str = "",
    ) -> UsageReport:
        """Credits used (charges less refunds) and charges counted, per group, over [start, end).

        By actor or by the label `label_key`, the rows also say what each value holds now, and
        values that hold credits or are named in `members` (those with a budget of their own)
        have a row even with no charge in the range: after the charged rows, in key order.

        One aggregate over the CHARGE and REFUND entries of the range, found through the index
        (workspace_id, created_at); the actor and label groupings join a refund to its charge's
        hold (by the unique (workspace_id, request_id)) to credit it to whoever was charged.

        Raises: MeterError WORKSPACE_NOT_FOUND.
        """
        key, join, order = _USAGE_GROUPS[grouping]
        where = ["j.workspace_id = :ws", "j.kind IN (2, 5)"]
        params: dict[str, Any] = {"ws": workspace_id, "lk": label_key}
        if start is not None:
            where.append("j.created_at >= :start")
            params["start"] = start
        if end is not None:
            where.append("j.created_at < :end")
            params["end"] = end
        sql = text(
            f"SELECT {key} AS key, -sum(j.amount) AS credits,"
            " count(*) FILTER (WHERE j.kind = 2) AS calls"
            f" FROM journal j {join} WHERE {' AND '.join(where)} GROUP BY 1 ORDER BY {order}"
        )
        held: dict[str, int] = {}
        async with self.engine.connect() as conn:
            await self._require_workspace(conn, workspace_id)
            rows = (await conn.execute(sql, params)).all()
            scoped = grouping in (UsageGrouping.ACTOR, UsageGrouping.LABEL)
            if scoped:
                # Values that hold credits are using them, charged or not yet.
                by = _HELD_BY_ACTOR if grouping is UsageGrouping.ACTOR else _HELD_BY_LABEL
                held = {r[0]: int(r[1]) for r in await conn.execute(by, params)}
        timed = grouping in (UsageGrouping.DAY, UsageGrouping.WEEK)
        report = UsageReport(
            tuple(
                UsageRow(
                    key="" if timed else r.key,
                    period_start=r.key if timed else None,
                    credits=int(r.credits),
                    count=int(r.calls),
                )
                for r in rows
            )
        )
        if not scoped:
            return report
        report = report.with_keys([*held, *members])
        return UsageReport(tuple(replace(r, held=held.get(r.key, 0)) for r in report.rows))

    async def _newest_first(
        self,
        workspace_id: str,
        q: Select[Any],
        key: Column[int],
        limit: int,
        before: int | None,
    ) -> Sequence[Row[Any]]:
        """One page of a workspace's rows by descending `key`, below the `before` cursor.

        Keyset pagination on an id dense per workspace: a page below a cursor never changes
        as new rows arrive above it.

        Raises: MeterError WORKSPACE_NOT_FOUND (an empty page and no workspace are told apart).
        """
        if before is not None:
            q = q.where(key < before)
        q = q.order_by(key.desc()).limit(limit)
        async with self.engine.connect() as conn:
            await self._require_workspace(conn, workspace_id)
            rows: Sequence[Row[Any]] = (await conn.execute(q)).all()
        return rows

    async def _require_workspace(self, conn: Any, workspace_id: str) -> None:
        found = (
            await conn.execute(
                select(workspaces.c.workspace_id).where(workspaces.c.workspace_id == workspace_id)
            )
        ).first()
        if found is None:
            raise errors.workspace_not_found(workspace_id)


# What each member's open holds hold now.
_HELD_BY_ACTOR = text(
    "SELECT actor_id, sum(amount) FROM holds"
    " WHERE workspace_id = :ws AND state = 1 AND actor_id <> '' GROUP BY 1"
)

_HELD_BY_LABEL = text(
    "SELECT labels->>:lk, sum(amount) FROM holds"
    " WHERE workspace_id = :ws AND state = 1 AND labels ? :lk GROUP BY 1"
)

# Per grouping: the group key, the join it needs, the order of the rows. Days and weeks are
# truncated in UTC whatever the session's time zone; PostgreSQL's weeks start on Monday.
_REFUND_HOLD = (
    "LEFT JOIN holds h ON j.kind = 5 AND h.workspace_id = j.workspace_id"
    " AND h.request_id = j.labels->>'charge_request_id'"
)
_USAGE_GROUPS: dict[UsageGrouping, tuple[str, str, str]] = {
    UsageGrouping.OPERATION: ("j.operation", "", "credits DESC, key"),
    UsageGrouping.ACTOR: ("coalesce(h.actor_id, j.actor_id)", _REFUND_HOLD, "credits DESC, key"),
    UsageGrouping.LABEL: (
        "coalesce(CASE WHEN j.kind = 5 THEN h.labels ELSE j.labels END ->> :lk, '')",
        _REFUND_HOLD,
        "credits DESC, key",
    ),
    UsageGrouping.DAY: ("date_trunc('day', j.created_at, 'UTC')", "", "key"),
    UsageGrouping.WEEK: ("date_trunc('week', j.created_at, 'UTC')", "", "key"),
}


def _alert(r: Any) -> AlertEvent:
    return AlertEvent(
        r.event_id,
        AlertKind(r.kind),
        r.available,
        r.threshold,
        r.created_at,
        r.required,
        r.operation,
        r.request_id,
    )


def _hold_view(workspace_id: str, r: Any) -> HoldView:
    h = _hold(r)
    return HoldView(
        hold_id=h.hold_id,
        workspace_id=workspace_id,
        request_id=h.request_id,
        amount=h.amount,
        state=h.state,
        expires_at=h.expires_at,
        operation=h.operation,
        catalog_version=h.catalog_version,
        actor_id=h.actor_id,
        labels=h.labels,
        created_at=h.created_at,
        charged=h.charged,
        finished_at=h.finished_at,
    )


# The workspace row, its lots with credits left and its auto top-up threshold (the runway's
# topup_at), in one statement. The subqueries name the workspaces as constants too: on Citus
# a correlated subquery without one is sent to every shard (and fails while a worker is down).
def _balance_sql(ws: str) -> str:
    return (
        "SELECT now() AS now, w.*, coalesce((SELECT jsonb_agg(to_jsonb(l)) FROM lots l"
        f" WHERE l.workspace_id = w.workspace_id AND l.workspace_id {ws}"
        " AND l.remaining > 0), '[]') AS live_lots,"
        " (SELECT t.threshold FROM auto_topups t WHERE t.workspace_id = w.workspace_id"
        f"  AND t.workspace_id {ws} AND t.enabled) AS topup_threshold"
        f" FROM workspaces w WHERE w.workspace_id {ws}"
    )


_BALANCE = text(_balance_sql("= :w"))
# The same, for a set of workspaces: each found by its primary key.
_BALANCES = text(_balance_sql("= ANY(CAST(:ws AS text[]))"))


def _balance_of(row: Any, clock: Clock) -> tuple[BalanceView, int]:
    m = row._mapping
    lots = [_lot(ordered(LOT_COLUMNS, lt)) for lt in m["live_lots"]]
    threshold = m["topup_threshold"]
    topup = None if threshold is None else TopUp(True, threshold, "", 0, 0)
    book = Book(_account(ordered(ACCOUNT_COLUMNS, m)), lots, {}, {}, clock.at(row.now), None, topup)
    return book.balance(runway=True), row.alert_seq
