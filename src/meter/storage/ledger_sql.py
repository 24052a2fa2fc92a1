"""The ledger's hot path in SQL: keyed reads of a batch's state, set-based writes of its changes.

Every statement takes whole columns as array parameters (one array per column, `unnest`ed
in SQL), so its text is fixed: psycopg prepares it once per connection and sends the arrays
in binary. The statements are built here from the tables of meter.storage.tables, so they
follow the schema without restating it, and these builders and parsers are the only place
that knows how a domain object maps to its row.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import Any

import orjson
from sqlalchemy import ARRAY, Table
from sqlalchemy.dialects import postgresql
from sqlalchemy.dialects.postgresql import JSONB

from meter.ledger.model import (
    Account,
    AlertEvent,
    Entry,
    EntryKind,
    Hold,
    HoldKind,
    HoldState,
    Level,
    Lot,
)
from meter.storage import tables as t

_DIALECT = postgresql.dialect()  # type: ignore[no-untyped-call]


def _columns(table: Table) -> list[str]:
    return [c.name for c in table.columns]


def _cast(table: Table, name: str) -> tuple[str, str]:
    """(the array parameter's element type, the cast from it to the column's type).

    JSON documents and arrays travel as text (an SQL array cannot hold arrays of different
    lengths) and are cast row by row."""
    col_type = table.c[name].type
    if isinstance(col_type, JSONB | ARRAY):
        return "text", "::" + col_type.compile(dialect=_DIALECT)
    return col_type.compile(dialect=_DIALECT), ""


def _unnest(table: Table, names: Sequence[str]) -> tuple[str, str]:
    """`unnest(%s::T1[], ...) AS u(c1, ...)` and the select list that casts u's columns."""
    params, select = [], []
    for name in names:
        element, cast = _cast(table, name)
        params.append(f"%s::{element}[]")
        select.append(f"u.{name}{cast}")
    return f"unnest({', '.join(params)}) AS u({', '.join(names)})", ", ".join(select)


def insert(table: Table) -> str:
    """INSERT of many rows, one array parameter per column in table order."""
    names = _columns(table)
    source, select = _unnest(table, names)
    return f"INSERT INTO {table.name} ({', '.join(names)}) SELECT {select} FROM {source}"


def update(table: Table, key: Sequence[str], columns: Sequence[str], extra: str = "") -> str:
    """UPDATE of many rows found by key; parameters: the key columns, then `columns`."""
    source, _ = _unnest(table, [*key, *columns])
    sets = [f"{c} = u.{c}{_cast(table, c)[1]}" for c in columns] + ([extra] if extra else [])
    where = " AND ".join(f"x.{k} = u.{k}" for k in key)
    return f"UPDATE {table.name} x SET {', '.join(sets)} FROM {source} WHERE {where}"


def _cols(table: Table, alias: str) -> str:
    return ", ".join(f"{alias}.{c}" for c in _columns(table))


# Reads. Each finds rows by a primary or unique key; db.ledger_pool pins those plans.

# Workspaces a batch changes are locked once each, in workspace_id order: every writer takes
# them in that order, so batches cannot deadlock. The transaction's time comes with them.
LOCK = (
    f"SELECT {_cols(t.workspaces, 'w')}, now() FROM workspaces w"
    " WHERE w.workspace_id = ANY(%s::text[]) ORDER BY w.workspace_id FOR UPDATE"
)
# The sweeper's mode: workspaces another transaction holds are left for its next round.
LOCK_SKIP = LOCK + " SKIP LOCKED"
CREATE = (
    "INSERT INTO workspaces (workspace_id) SELECT unnest(%s::text[]) ORDER BY 1"
    " ON CONFLICT DO NOTHING"
)
HOLDS = (
    f"SELECT {_cols(t.holds, 'h')} FROM unnest(%s::text[], %s::text[]) AS r(ws, rid)"
    " JOIN holds h ON h.workspace_id = r.ws AND h.request_id = r.rid"
)
OVERDUE_HOLDS = (
    f"SELECT {_cols(t.holds, 'h')} FROM holds h"
    " WHERE h.workspace_id = ANY(%s::text[]) AND h.state = 1 AND h.expires_at <= now()"
)
LIVE_LOTS = (
    f"SELECT {_cols(t.lots, 'l')} FROM lots l"
    " WHERE l.workspace_id = ANY(%s::text[]) AND l.remaining > 0"
)
# Spent lots that loaded holds drew from (a commit gives credits back to them): rare.
LOTS = (
    f"SELECT {_cols(t.lots, 'l')} FROM unnest(%s::text[], %s::int8[]) AS r(ws, id)"
    " JOIN lots l ON l.workspace_id = r.ws AND l.lot_id = r.id"
)
# Grants, adjustments and refunds by request id: their replays, and ids that a hold may not
# reuse (the partial unique index uq_journal_request serves it).
REQUEST_ENTRIES = (
    f"SELECT {_cols(t.journal, 'j')} FROM unnest(%s::text[], %s::text[]) AS r(ws, rid)"
    " JOIN journal j ON j.workspace_id = r.ws AND j.request_id = r.rid AND j.kind IN (1, 4, 5)"
)

# Writes: one statement per table and kind of change.

INSERT_LOTS = insert(t.lots)
UPDATE_LOTS = update(t.lots, ("workspace_id", "lot_id"), ("remaining",))
INSERT_HOLDS = insert(t.holds)
HOLD_CHANGES = (
    "state",
    "charged",
    "shortfall",
    "refunded",
    "late",
    "labels",
    "draw_lots",
    "draw_amounts",
    "commit_fingerprint",
    "expires_at",
    "finished_at",
)
UPDATE_HOLDS = update(t.holds, ("workspace_id", "hold_id"), HOLD_CHANGES)
INSERT_ENTRIES = insert(t.journal)
INSERT_ALERTS = insert(t.alerts)
WORKSPACE_CHANGES = tuple(
    c for c in _columns(t.workspaces) if c not in ("workspace_id", "created_at", "updated_at")
)
UPDATE_WORKSPACES = update(
    t.workspaces, ("workspace_id",), WORKSPACE_CHANGES, extra="updated_at = now()"
)


Row = Any  # a sequence in the table's column order, or a mapping by column name


def dt(value: Any) -> datetime:
    """A timestamp from a JSON document (ISO text) or a driver row (datetime)."""
    return datetime.fromisoformat(value) if isinstance(value, str) else value  # type: ignore[no-any-return]


def opt_dt(value: Any) -> datetime | None:
    return None if value is None else dt(value)


def _json(value: dict[str, str] | None) -> str | None:
    return orjson.dumps(value).decode() if value else None


def _int_array(values: Sequence[int]) -> str:
    return "{" + ",".join(map(str, values)) + "}"


def columns(rows: Sequence[Sequence[Any]], width: int) -> list[list[Any]]:
    """Rows turned into the statements' column arrays."""
    if not rows:
        return [[] for _ in range(width)]
    return [list(c) for c in zip(*rows, strict=True)]


# Rows -> domain. Mappings (queries.py reads rows by name) and the hot path's tuples alike.

ACCOUNT_COLUMNS = _columns(t.workspaces)
LOT_COLUMNS = _columns(t.lots)
HOLD_COLUMNS = _columns(t.holds)
ENTRY_COLUMNS = _columns(t.journal)


def named(names: Sequence[str], row: Sequence[Any]) -> dict[str, Any]:
    return dict(zip(names, row, strict=False))


def account(r: Row) -> Account:
    return Account(
        workspace_id=r["workspace_id"],
        balance=r["balance"],
        held=r["held"],
        lifetime_used=r["lifetime_used"],
        lifetime_granted=r["lifetime_granted"],
        low_threshold=r["low_threshold"],
        critical_threshold=r["critical_threshold"],
        alert_level=Level(r["alert_level"]),
        hold_seq=r["hold_seq"],
        lot_seq=r["lot_seq"],
        entry_seq=r["entry_seq"],
        alert_seq=r["alert_seq"],
        next_expiry_at=opt_dt(r["next_expiry_at"]),
        last_entry_at=opt_dt(r["last_entry_at"]),
        last_entry_kind=EntryKind(r["last_entry_kind"]) if r["last_entry_kind"] else None,
        last_entry_amount=r["last_entry_amount"],
        last_entry_operation=r["last_entry_operation"],
        created_at=opt_dt(r["created_at"]),
    )


def lot(r: Row) -> Lot:
    return Lot(
        lot_id=r["lot_id"],
        request_id=r["request_id"],
        amount=r["amount"],
        remaining=r["remaining"],
        expires_at=opt_dt(r["expires_at"]),
        source=r["source"],
        package=r["package"],
        created_at=dt(r["created_at"]),
    )


def hold(r: Row) -> Hold:
    return Hold(
        hold_id=r["hold_id"],
        request_id=r["request_id"],
        kind=HoldKind(r["kind"]),
        state=HoldState(r["state"]),
        amount=r["amount"],
        operation=r["operation"],
        catalog_version=r["catalog_version"],
        actor_id=r["actor_id"],
        labels=dict(r["labels"] or {}),
        draws=[[a, b] for a, b in zip(r["draw_lots"], r["draw_amounts"], strict=True)],
        fingerprint=r["fingerprint"],
        expires_at=dt(r["expires_at"]),
        created_at=dt(r["created_at"]),
        charged=r["charged"],
        shortfall=r["shortfall"],
        refunded=r["refunded"],
        late=r["late"],
        commit_fingerprint=r["commit_fingerprint"],
        finished_at=opt_dt(r["finished_at"]),
    )


def hold_tuple(r: Sequence[Any]) -> Hold:
    """A hold from the hot path's row (HOLD_COLUMNS order), without a mapping in between."""
    (_, hold_id, request_id, kind, state, amount, charged, shortfall, refunded, late,
     operation, version, actor_id, labels, draw_lots, draw_amounts, fp, commit_fp,
     expires_at, created_at, finished_at) = r  # fmt: skip
    return Hold(
        hold_id,
        request_id,
        HoldKind(kind),
        HoldState(state),
        amount,
        operation,
        version,
        actor_id,
        dict(labels) if labels else {},
        [[a, b] for a, b in zip(draw_lots, draw_amounts, strict=True)],
        fp,
        expires_at,
        created_at,
        charged,
        shortfall,
        refunded,
        late,
        commit_fp,
        finished_at,
    )


def entry(r: Row) -> Entry:
    return Entry(
        entry_id=r["entry_id"],
        kind=EntryKind(r["kind"]),
        amount=r["amount"],
        balance_after=r["balance_after"],
        created_at=dt(r["created_at"]),
        operation=r["operation"],
        actor_id=r["actor_id"],
        request_id=r["request_id"],
        labels=dict(r["labels"] or {}),
        shortfall=r["shortfall"],
        late=r["late"],
        reason=r["reason"],
        package=r["package"],
        fingerprint=r["fingerprint"],
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
    )


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
        a.next_expiry_at,
        a.last_entry_at,
        int(a.last_entry_kind) if a.last_entry_kind else None,
        a.last_entry_amount,
        a.last_entry_operation,
    )
