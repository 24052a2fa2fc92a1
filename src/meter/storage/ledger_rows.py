"""Rows <-> domain objects for the ledger's statements (ledger_sql.py): parsers and builders.

These are the only place that knows how a domain object maps to its row: a row is a sequence
in its table's column order (as ledger_sql's statements and SQLAlchemy's select(table) take
and return it).
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import date, datetime
from typing import Any

import orjson
from sqlalchemy import Table

from meter.ledger.budgets import Budget, BudgetSpend
from meter.ledger.model import (
    Account,
    AlertEvent,
    Category,
    Entry,
    EntryKind,
    Event,
    Hold,
    HoldKind,
    HoldState,
    Level,
    Lot,
    LotState,
    Period,
)
from meter.ledger.policies import TopUp
from meter.storage import tables as t


def columns(table: Table) -> list[str]:
    return [c.name for c in table.columns]


def dt(value: Any) -> datetime:
    """A timestamp from a JSON document (ISO text) or a driver row (datetime).

    A batch's rows repeat their times (holds made in one transaction, a workspace's lots),
    so recent texts are kept with what they parsed to."""
    if not isinstance(value, str):
        return value  # type: ignore[no-any-return]
    parsed = _parsed.get(value)
    if parsed is None:
        if len(_parsed) > 4096:
            _parsed.clear()
        parsed = _parsed[value] = datetime.fromisoformat(value)
    return parsed


_parsed: dict[str, datetime] = {}


def opt_dt(value: Any) -> datetime | None:
    return None if value is None else dt(value)


def _json(value: dict[str, str] | None) -> str | None:
    return orjson.dumps(value).decode() if value else None


def _int_array(values: Sequence[int]) -> str:
    return "{" + ",".join(map(str, values)) + "}"


# Rows -> domain. A row is a sequence in its table's column order (as the statements above
# and SQLAlchemy's select(table) return it); `ordered` makes one from a mapping by name.

ACCOUNT_COLUMNS = columns(t.workspaces)
LOT_COLUMNS = columns(t.lots)

Row = Sequence[Any]


def ordered(names: Sequence[str], mapping: Any) -> list[Any]:
    return [mapping[n] for n in names]


# Enum members by value: calling an IntEnum class costs several times a dict lookup.
_LEVEL = Level._value2member_map_
_ENTRY_KIND = EntryKind._value2member_map_
_HOLD_KIND = HoldKind._value2member_map_
_HOLD_STATE = HoldState._value2member_map_
_CATEGORY = Category._value2member_map_
_LOT_STATE = LotState._value2member_map_


def account(r: Row) -> Account:
    (workspace_id, balance, held, used, granted, low, critical, level, hold_seq, lot_seq,
     entry_seq, alert_seq, event_seq, next_expiry_at, next_notice_at, last_at, last_kind,
     last_amount, last_operation, budgets, auto_topup, created_at, _, runway_days, burn,
     burn_day, runway_low) = r[:27]  # fmt: skip
    return Account(
        workspace_id,
        balance,
        held,
        used,
        granted,
        low,
        critical,
        _LEVEL[level],  # type: ignore[arg-type]
        hold_seq,
        lot_seq,
        entry_seq,
        alert_seq,
        opt_dt(next_expiry_at),
        opt_dt(last_at),
        _ENTRY_KIND[last_kind] if last_kind else None,  # type: ignore[arg-type]
        last_amount,
        last_operation,
        opt_dt(created_at),
        event_seq,
        opt_dt(next_notice_at),
        budgets,
        auto_topup,
        runway_days,
        list(burn),
        _day(burn_day),
        runway_low,
    )


def _day(value: Any) -> date | None:
    """A date from a JSON document (ISO text) or a driver row."""
    if value is None or isinstance(value, date):
        return value
    return date.fromisoformat(value)


def lot(r: Row) -> Lot:
    (_, lot_id, request_id, amount, remaining, expires_at, source, package, created_at, noticed,
     category, priority, state, fp) = r  # fmt: skip
    return Lot(
        lot_id,
        request_id,
        amount,
        remaining,
        opt_dt(expires_at),
        source,
        package,
        dt(created_at),
        noticed,
        _CATEGORY[category],  # type: ignore[arg-type]
        priority,
        _LOT_STATE[state],  # type: ignore[arg-type]
        fp,
    )


def hold(r: Row) -> Hold:
    (_, hold_id, request_id, kind, state, amount, charged, shortfall, refunded, late,
     operation, version, actor_id, labels, draw_lots, draw_amounts, fp, commit_fp,
     expires_at, created_at, finished_at) = r  # fmt: skip
    return Hold(
        hold_id,
        request_id,
        _HOLD_KIND[kind],  # type: ignore[arg-type]
        _HOLD_STATE[state],  # type: ignore[arg-type]
        amount,
        operation,
        version,
        actor_id,
        dict(labels) if labels else {},
        [[a, b] for a, b in zip(draw_lots, draw_amounts, strict=True)],
        fp,
        dt(expires_at),
        dt(created_at),
        charged,
        shortfall,
        refunded,
        late,
        commit_fp,
        opt_dt(finished_at),
    )


def entry(r: Row) -> Entry:
    (_, entry_id, kind, amount, balance_after, operation, actor_id, request_id, labels,
     shortfall, late, reason, package, fp, created_at, category) = r  # fmt: skip
    return Entry(
        entry_id=entry_id,
        kind=_ENTRY_KIND[kind],  # type: ignore[arg-type]
        amount=amount,
        balance_after=balance_after,
        created_at=dt(created_at),
        operation=operation,
        actor_id=actor_id,
        request_id=request_id,
        labels=dict(labels or {}),
        shortfall=shortfall,
        late=late,
        reason=reason,
        package=package,
        fingerprint=fp,
        category=_CATEGORY.get(category),  # type: ignore[arg-type]
    )


# Domain -> rows, in the column order of the statements above.


def hold_row(ws: str, h: Hold) -> tuple[Any, ...]:
    return (
        ws,
        h.hold_id,
        h.request_id,
        int(h.kind),
        int(h.state),
        h.amount,
        h.charged,
        h.shortfall,
        h.refunded,
        h.late,
        h.operation,
        h.catalog_version,
        h.actor_id,
        _json(h.labels),
        _int_array([d[0] for d in h.draws]),
        _int_array([d[1] for d in h.draws]),
        h.fingerprint,
        h.commit_fingerprint,
        h.expires_at,
        h.created_at,
        h.finished_at,
    )


def hold_update_row(ws: str, h: Hold) -> tuple[Any, ...]:
    """The key, then HOLD_CHANGES."""
    return (
        ws,
        h.hold_id,
        int(h.state),
        h.charged,
        h.shortfall,
        h.refunded,
        h.late,
        _json(h.labels),
        _int_array([d[0] for d in h.draws]),
        _int_array([d[1] for d in h.draws]),
        h.commit_fingerprint,
        h.expires_at,
        h.finished_at,
    )


def lot_row(ws: str, lt: Lot) -> tuple[Any, ...]:
    return (
        ws,
        lt.lot_id,
        lt.request_id,
        lt.amount,
        lt.remaining,
        lt.expires_at,
        lt.source,
        lt.package,
        lt.created_at,
        lt.expiring_noticed,
        int(lt.category),
        lt.priority,
        int(lt.state),
        lt.fingerprint,
    )


def revised_lot_row(ws: str, lt: Lot) -> tuple[Any, ...]:
    """The key, then UPDATE_REVISED_LOTS' columns."""
    return (ws, lt.lot_id, lt.remaining, int(lt.state), lt.expiring_noticed)


def entry_row(ws: str, e: Entry) -> tuple[Any, ...]:
    return (
        ws,
        e.entry_id,
        int(e.kind),
        e.amount,
        e.balance_after,
        e.operation,
        e.actor_id,
        e.request_id,
        _json(dict(e.labels)),
        e.shortfall,
        e.late,
        e.reason,
        e.package,
        e.fingerprint,
        e.created_at,
        0 if e.category is None else int(e.category),
    )


def alert_row(ws: str, a: AlertEvent) -> tuple[Any, ...]:
    return (
        ws,
        a.event_id,
        int(a.kind),
        a.available,
        a.threshold,
        a.required,
        a.operation,
        a.request_id,
        a.created_at,
    )


def event_row(ws: str, e: Event) -> tuple[Any, ...]:
    return (ws, e.sequence, e.type, e.created_at, orjson.dumps(e.data).decode())


def workspace_row(a: Account) -> tuple[Any, ...]:
    """The key, then WORKSPACE_CHANGES."""
    return (
        a.workspace_id,
        a.balance,
        a.held,
        a.lifetime_used,
        a.lifetime_granted,
        a.low_threshold,
        a.critical_threshold,
        int(a.alert_level),
        a.hold_seq,
        a.lot_seq,
        a.entry_seq,
        a.alert_seq,
        a.event_seq,
        a.next_expiry_at,
        a.next_notice_at,
        a.last_entry_at,
        int(a.last_entry_kind) if a.last_entry_kind else None,
        a.last_entry_amount,
        a.last_entry_operation,
        a.budgets,
        a.auto_topup,
        a.runway_days,
        _int_array(a.burn),
        a.burn_day,
        a.runway_low,
    )


# The credit policies' rows (DESIGN.md §10, §13).

_PERIOD = Period._value2member_map_


def budget(r: Row) -> Budget:
    _, budget_id, scope_key, scope_value, period, limit, warn_at, enabled = r[:8]
    return Budget(
        budget_id,
        scope_key,
        scope_value,
        _PERIOD[period],  # type: ignore[arg-type]
        limit,
        tuple(warn_at),
        enabled,
    )


def budget_spend(r: Row) -> BudgetSpend:
    _, budget_id, value, held, used, period, warned, exceeded = r
    return BudgetSpend(budget_id, value, held, used, opt_dt(period), warned, exceeded)


def budget_spend_row(ws: str, s: BudgetSpend) -> tuple[Any, ...]:
    return (ws, s.budget_id, s.value, s.held, s.used, s.period, s.warned, s.exceeded)


def topup(r: Row) -> TopUp:
    (_, enabled, threshold, package, amount, monthly_limit, failures, seq, outstanding,
     requested_at, month_start, month_count, last_failed) = r  # fmt: skip
    return TopUp(
        enabled,
        threshold,
        package,
        amount,
        monthly_limit,
        failures,
        seq,
        outstanding,
        opt_dt(requested_at),
        opt_dt(month_start),
        month_count,
        last_failed,
    )


def topup_row(ws: str, tp: TopUp) -> tuple[Any, ...]:
    return (
        ws,
        tp.enabled,
        tp.threshold,
        tp.package,
        tp.amount,
        tp.monthly_limit,
        tp.failures,
        tp.seq,
        tp.outstanding,
        tp.requested_at,
        tp.month_start,
        tp.month_count,
        tp.last_failed,
    )
