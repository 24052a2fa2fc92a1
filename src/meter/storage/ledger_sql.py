"""The ledger's hot path in SQL: keyed reads of a batch's state, set-based writes of its changes.

A batch reads through meter_load (migration 0004) and writes with statements that take
whole columns as array parameters (one array per column, `unnest`ed in SQL), so their text
is fixed however many rows they carry and each connection prepares them once (Writer). The
statements are built here from the tables of meter.storage.tables and event_tables, so they
follow the schema without restating it; ledger_rows.py maps domain objects to their rows and
back.
"""

from __future__ import annotations

import weakref
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import orjson
from sqlalchemy import ARRAY, Boolean, DateTime, Integer, Table
from sqlalchemy.dialects import postgresql
from sqlalchemy.dialects.postgresql import JSONB

from meter.storage import ledger_rows as rows
from meter.storage import tables as t
from meter.storage.event_tables import events

_DIALECT = postgresql.dialect()  # type: ignore[no-untyped-call]

Encode = Callable[[Sequence[Any]], str]


# Array parameters are sent as array literals built here: psycopg's own list adapters work
# element by element in Python and cost several times what these joins do. Values repeated
# across a batch (its time, an operation, a workspace) are formatted once.


def _quote(v: str | None) -> str:
    if v is None:
        return "NULL"
    return '"' + v.replace("\\", "\\\\").replace('"', '\\"') + '"'


def texts(values: Sequence[str | None]) -> str:
    quoted = {v: _quote(v) for v in set(values)}
    return "{" + ",".join(map(quoted.__getitem__, values)) + "}"


def ints(values: Sequence[int | None]) -> str:
    if None in values:
        return "{" + ",".join("NULL" if v is None else str(v) for v in values) + "}"
    return "{" + ",".join(map(str, values)) + "}"


def bools(values: Sequence[bool]) -> str:
    return "{" + ",".join("t" if v else "f" for v in values) + "}"


def times(values: Sequence[datetime | None]) -> str:
    iso = {v: "NULL" if v is None else v.isoformat() for v in set(values)}
    return "{" + ",".join(map(iso.__getitem__, values)) + "}"


def _encoder(col_type: Any) -> Encode:
    if isinstance(col_type, Boolean):
        return bools
    if isinstance(col_type, Integer):  # SmallInteger and BigInteger too
        return ints
    if isinstance(col_type, DateTime):
        return times
    return texts  # text, and JSON documents and arrays as their text


@dataclass(frozen=True, slots=True)
class Statement:
    """A hot-path statement and how each of its array parameters is written."""

    sql: str
    encoders: tuple[Encode, ...]

    def params(self, columns: Sequence[Sequence[Any]]) -> list[str]:
        """The parameters for whole columns of values, one array each."""
        return [enc(col) for enc, col in zip(self.encoders, columns, strict=True)]

    def rows(self, rows: Sequence[Sequence[Any]]) -> list[str]:
        """The parameters for rows of values."""
        return self.params(list(zip(*rows, strict=True)))


# The statements' type names: short ones keep the text PostgreSQL parses at PREPARE small.
_SHORT = {
    "BIGINT": "int8",
    "SMALLINT": "int2",
    "INTEGER": "int4",
    "BOOLEAN": "bool",
    "TEXT": "text",
    "TIMESTAMP WITH TIME ZONE": "timestamptz",
    "JSONB": "jsonb",
    "BIGINT[]": "int8[]",
}


def _cast(table: Table, name: str) -> tuple[str, str]:
    """(the array parameter's element type, the cast from it to the column's type).

    JSON documents and arrays travel as text (an SQL array cannot hold arrays of different
    lengths) and are cast row by row."""
    col_type = table.c[name].type
    sql_type = _SHORT[col_type.compile(dialect=_DIALECT)]
    if isinstance(col_type, JSONB | ARRAY):
        return "text", "::" + sql_type
    return sql_type, ""


def _unnest(table: Table, names: Sequence[str]) -> tuple[str, str, tuple[Encode, ...]]:
    """`unnest(%s::T1[], ...) AS u(c1, ...)`, the select list that casts u's columns, and
    the parameters' encoders."""
    params, select = [], []
    for name in names:
        element, cast = _cast(table, name)
        params.append(f"%s::{element}[]")
        select.append(f"u.{name}{cast}")
    source = f"unnest({', '.join(params)}) AS u({', '.join(names)})"
    return source, ", ".join(select), tuple(_encoder(table.c[n].type) for n in names)


def insert(
    table: Table, defaulted: Sequence[str] = (), computed: Mapping[str, str] | None = None
) -> Statement:
    """INSERT of many rows, one array parameter per column in table order; the `defaulted`
    columns take their server defaults, the `computed` ones an SQL expression (over `u`, the
    row's parameters)."""
    computed = computed or {}
    names = [n for n in rows.columns(table) if n not in defaulted and n not in computed]
    source, select, encoders = _unnest(table, names)
    targets = ", ".join([*names, *computed])
    select = ", ".join([select, *computed.values()])
    return Statement(
        f"INSERT INTO {table.name} ({targets}) SELECT {select} FROM {source}", encoders
    )


def upsert(table: Table, key: Sequence[str]) -> Statement:
    """INSERT of many rows that updates the rows already there (found by key)."""
    base = insert(table)
    sets = ", ".join(f"{c} = EXCLUDED.{c}" for c in rows.columns(table) if c not in key)
    return Statement(
        f"{base.sql} ON CONFLICT ({', '.join(key)}) DO UPDATE SET {sets}", base.encoders
    )


def update(table: Table, key: Sequence[str], columns: Sequence[str], extra: str = "") -> Statement:
    """UPDATE of many rows found by key; parameters: the key columns, then `columns`."""
    source, _, encoders = _unnest(table, [*key, *columns])
    sets = [f"{c} = u.{c}{_cast(table, c)[1]}" for c in columns] + ([extra] if extra else [])
    where = " AND ".join(f"x.{k} = u.{k}" for k in key)
    return Statement(
        f"UPDATE {table.name} x SET {', '.join(sets)} FROM {source} WHERE {where}", encoders
    )


def _cols(table: Table, alias: str) -> str:
    return ", ".join(f"{alias}.{c}" for c in rows.columns(table))


# Reads: meter_load (migration 0004) locks a batch's workspaces and reads its state by key.


def _literal(text: str) -> str:
    """Text as an SQL string literal (standard_conforming_strings is on, see db.ledger_pool)."""
    return "'" + text.replace("'", "''") + "'"


def load(
    ids: Sequence[str],
    create: Sequence[str],
    holds: Sequence[tuple[str, str]],
    entries: Sequence[tuple[str, str]],
    sweep: Sequence[str],
    skip_locked: bool,
    actors: Sequence[tuple[str, str]] = (),
    lots: Sequence[tuple[str, str]] = (),
    at: str = "now()",
) -> str:
    """Open the batch's transaction and read its state: one message, one round trip.

    The simple query protocol carries both statements in one message, so the arrays are
    inlined as literals; PostgreSQL plans only a function call, whose own plans are cached.
    `at` is the ledger's time, an SQL expression (meter.ledger.clock).
    """
    args = [
        texts(ids),
        texts(create),
        texts([k[0] for k in holds]),
        texts([k[1] for k in holds]),
        texts([k[0] for k in entries]),
        texts([k[1] for k in entries]),
        texts(sweep),
    ]
    tail = [
        texts([k[0] for k in actors]),
        texts([k[1] for k in actors]),
        texts([k[0] for k in lots]),
        texts([k[1] for k in lots]),
    ]
    call = ", ".join(map(_literal, args))
    more = ", ".join(map(_literal, tail))
    flag = "true" if skip_locked else "false"
    return f"BEGIN; SELECT meter_load({call}, {flag}, {more}, {at})::text"


loads = orjson.loads

# Spent lots that loaded holds drew from (a commit gives credits back to them): rare, so a
# round trip of its own rather than a wider read on every batch. A LATERAL probe with LIMIT 1
# stays one index lookup per key whatever the planner thinks of the table's size.
LOTS = Statement(
    f"SELECT {_cols(t.lots, 'l')} FROM unnest(%s::text[], %s::int8[]) AS r(ws, id),"
    " LATERAL (SELECT * FROM lots WHERE workspace_id = r.ws AND lot_id = r.id LIMIT 1) l",
    (texts, ints),
)

# Writes: one statement per table and kind of change.

INSERT_LOTS = insert(t.lots)
UPDATE_LOTS = update(t.lots, ("workspace_id", "lot_id"), ("remaining",))
# Lots whose state or credits.expiring flag changed (rare): a part of their own, so that the
# common one stays as narrow as it is. A lot is in one of the two, never both.
UPDATE_REVISED_LOTS = update(
    t.lots, ("workspace_id", "lot_id"), ("remaining", "state", "expiring_noticed")
)
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
# An event's feed position is its transaction's id, raised to the workspace's last event's:
# a transaction that took its id before another one and its workspace lock after it (it
# locked another workspace first) still sorts after that one's events, so the feed keeps
# each workspace's order. Raising a position never lets a reader pass over it
# (meter.storage.events_repo): a running transaction's events still sort at or above its id.
INSERT_EVENTS = insert(
    events,
    computed={
        "txid": "greatest(pg_current_xact_id(),"
        " (SELECT max(e.txid) FROM events e WHERE e.workspace_id = u.workspace_id))"
    },
)
UPSERT_SPEND = upsert(t.member_spend, ("workspace_id", "actor_id"))
UPSERT_TOPUPS = upsert(t.auto_topups, ("workspace_id",))
WORKSPACE_CHANGES = tuple(
    c for c in rows.columns(t.workspaces) if c not in ("workspace_id", "created_at", "updated_at")
)
UPDATE_WORKSPACES = update(
    t.workspaces, ("workspace_id",), WORKSPACE_CHANGES, extra="updated_at = now()"
)


def _together(parts: Sequence[Statement]) -> Statement:
    """Statements as the data-modifying CTEs of one: one message, one plan."""
    ctes = ", ".join(f"w{i} AS ({p.sql})" for i, p in enumerate(parts))
    return Statement(f"WITH {ctes} SELECT 1", tuple(e for p in parts for e in p.encoders))


def _prepare(name: str, statement: Statement) -> str:
    """PREPARE of a statement: its %s placeholders numbered, their types declared."""
    parts = statement.sql.split("%s")
    sql = parts[0] + "".join(f"${i}{rest}" for i, rest in enumerate(parts[1:], 1))
    types = [rest.split("::", 1)[1].split(")", 1)[0].split(",", 1)[0] for rest in parts[1:]]
    return f"PREPARE {name}({', '.join(types)}) AS {sql}"


# Every change of a batch, in this order. The Book never inserts and updates the same row in
# one batch (a new lot or hold is not also a changed one), which the CTEs need: they share
# one snapshot.
WRITE_PARTS = (
    INSERT_LOTS,
    UPDATE_LOTS,
    UPDATE_REVISED_LOTS,
    INSERT_HOLDS,
    UPDATE_HOLDS,
    INSERT_ENTRIES,
    INSERT_ALERTS,
    INSERT_EVENTS,
    UPSERT_SPEND,
    UPSERT_TOPUPS,
    UPDATE_WORKSPACES,
)


class Writer:
    """Writes a batch's changes and commits, in one simple-protocol message:
    "EXECUTE meter_write_N(...); COMMIT". PostgreSQL parses only the arguments and runs a
    plan it has; the driver has no statement text to parse.

    A batch's statement holds only the parts it has rows for: an empty part would still
    open its table and indexes, about 20 us each. Each connection prepares a combination the
    first time it meets it, in the same message (a handful occur: reserves, commits, both,
    grants, ...).
    """

    def __init__(self) -> None:
        # The combinations each connection has prepared; None: unknown after a failure.
        self._prepared: weakref.WeakKeyDictionary[Any, set[int] | None] = (
            weakref.WeakKeyDictionary()
        )

    def message(
        self, conn: Any, rows: Sequence[Sequence[Sequence[Any]]], *, guard: bool = False
    ) -> str:
        """The message for one connection; `rows` holds each of WRITE_PARTS' rows. With
        `guard`, the transaction commits only while a synchronous standby streams (SYNC_GUARD)."""
        mask = sum(1 << i for i, r in enumerate(rows) if r)
        parts = [(p, r) for p, r in zip(WRITE_PARTS, rows, strict=True) if r]
        args = [_literal(a) for p, r in parts for a in p.rows(r)]
        name = f"meter_write_{mask}"
        head = ""
        prepared = self._prepared.get(conn, set())
        if prepared is None:
            # A failed message may or may not have prepared its statement (PREPARE outlives
            # a rollback): start this connection's set again from nothing.
            head, prepared = "DEALLOCATE ALL; ", set()
        self._prepared[conn] = prepared
        if mask not in prepared:
            head += _prepare(name, _together([p for p, _ in parts])) + "; "
            prepared.add(mask)
        check = f"SELECT {SYNC_GUARD}(); " if guard else ""
        return f"{head}EXECUTE {name}({', '.join(args)}); {check}COMMIT"

    def failed(self, conn: Any) -> None:
        """The connection's last message failed: what it has prepared is unknown."""
        self._prepared[conn] = None


# --require-sync-standby: a batch's writes commit only while a synchronous standby streams,
# checked in the batch's own message just before its COMMIT. A commit then waits for that
# standby's acknowledgement (synchronous replication does that); what the check adds is that
# a primary which has turned synchronous replication off (pg_auto_failover's wait_primary,
# or Patroni without synchronous_mode_strict) answers UNAVAILABLE instead of acknowledging
# writes that only it has. The function is each connection's own (pg_temp): no schema of it.
SYNC_GUARD = "pg_temp.meter_require_sync_standby"
SYNC_GUARD_STATE = "MTR01"
CREATE_SYNC_GUARD = f"""
CREATE FUNCTION {SYNC_GUARD}() RETURNS void LANGUAGE plpgsql AS $$
BEGIN
  IF NOT EXISTS (SELECT FROM pg_stat_replication
                 WHERE state = 'streaming' AND sync_state IN ('sync', 'quorum')) THEN
    RAISE EXCEPTION 'no synchronous standby is streaming' USING ERRCODE = '{SYNC_GUARD_STATE}';
  END IF;
END $$"""
