"""The ledger's hot path in SQL: keyed reads of a batch's state, set-based writes of its changes.

A batch reads through meter_load (migration 0009) and writes with statements that take
whole columns as array parameters (one array per column, `unnest`ed in SQL), so their text
is fixed however many rows they carry and each connection prepares them once (Writer). The
statements are built here from the tables of meter.storage.tables and event_tables, so they
follow the schema without restating it; ledger_rows.py maps domain objects to their rows and
back.

On Citus (a Writer built with `citus=True`) every statement must be one Citus can route to
the batch's shard group: each UPDATE also names the batch's workspaces as a constant array
(Citus prunes shards by constants on the distribution column, not by joins), and arrays
that travel as text are cast by the IMMUTABLE meter_int8s (Citus refuses STABLE functions,
such as array input, over column references in an UPDATE). Plain PostgreSQL gets the
statements as they were.
"""

from __future__ import annotations

import re
import weakref
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import date, datetime
from typing import Any

import orjson
from sqlalchemy import ARRAY, Boolean, Date, DateTime, Integer, Table
from sqlalchemy.dialects import postgresql
from sqlalchemy.dialects.postgresql import JSONB

from meter.storage import ledger_rows as rows
from meter.storage import tables as t

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


def times(values: Sequence[datetime | date | None]) -> str:
    iso = {v: "NULL" if v is None else v.isoformat() for v in set(values)}
    return "{" + ",".join(map(iso.__getitem__, values)) + "}"


def _encoder(col_type: Any) -> Encode:
    if isinstance(col_type, Boolean):
        return bools
    if isinstance(col_type, Integer):  # SmallInteger and BigInteger too
        return ints
    if isinstance(col_type, DateTime | Date):
        return times
    return texts  # text, and JSON documents and arrays as their text


@dataclass(frozen=True, slots=True)
class Statement:
    """A hot-path statement and how each of its array parameters is written. With `prune`,
    its last parameter is the distinct workspaces of its rows (the first column), which
    Citus prunes by."""

    sql: str
    encoders: tuple[Encode, ...]
    prune: bool = False

    def params(self, columns: Sequence[Sequence[Any]]) -> list[str]:
        """The parameters for whole columns of values, one array each."""
        out = [enc(col) for enc, col in zip(self.encoders, columns, strict=True)]
        if self.prune:
            out.append(texts(sorted(set(columns[0]))))
        return out

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
    "DATE": "date",
    "JSONB": "jsonb",
    "BIGINT[]": "int8[]",
}


def _cast(table: Table, name: str, citus: bool = False) -> tuple[str, str]:
    """(the array parameter's element type, the cast from it to the column's type).

    JSON documents and arrays travel as text (an SQL array cannot hold arrays of different
    lengths) and are cast row by row; on Citus an int8 array by meter_int8s (as `%` here,
    for the value to cast)."""
    col_type = table.c[name].type
    sql_type = _SHORT[col_type.compile(dialect=_DIALECT)]
    if isinstance(col_type, JSONB | ARRAY):
        if citus and sql_type == "int8[]":
            return "text", "meter_int8s(%)"
        return "text", "%::" + sql_type
    return sql_type, "%"


def _unnest(
    table: Table, names: Sequence[str], citus: bool = False, ordinality: bool = False
) -> tuple[str, str, tuple[Encode, ...]]:
    """`unnest(%s::T1[], ...) AS u(c1, ...)`, the select list that casts u's columns, and
    the parameters' encoders. With `ordinality`, u.n numbers the rows from 1."""
    params, select = [], []
    for name in names:
        element, cast = _cast(table, name, citus)
        params.append(f"%s::{element}[]")
        select.append(cast.replace("%", f"u.{name}"))
    encoders = tuple(_encoder(table.c[n].type) for n in names)
    aliases = [*names, "n"] if ordinality else names
    source = f"unnest({', '.join(params)}){' WITH ORDINALITY' if ordinality else ''}"
    source += f" AS u({', '.join(aliases)})"
    return source, ", ".join(select), encoders


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


def update(
    table: Table,
    key: Sequence[str],
    columns: Sequence[str],
    extra: str = "",
    *,
    citus: bool = False,
) -> Statement:
    """UPDATE of many rows found by key; parameters: the key columns, then `columns` (then,
    on Citus, the rows' workspaces again, to prune by)."""
    source, _, encoders = _unnest(table, [*key, *columns], citus)
    sets = [f"{c} = " + _cast(table, c, citus)[1].replace("%", f"u.{c}") for c in columns]
    sets += [extra] if extra else []
    where = " AND ".join(f"x.{k} = u.{k}" for k in key)
    if citus:
        where += f" AND x.{key[0]} = ANY(%s::text[])"
    return Statement(
        f"UPDATE {table.name} x SET {', '.join(sets)} FROM {source} WHERE {where}",
        encoders,
        prune=citus,
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
    scopes: Sequence[tuple[str, str, str]] = (),
    lots: Sequence[tuple[str, str]] = (),
    at: str = "now()",
    shard: int = 0,
) -> str:
    """Open the batch's transaction and read its state: one message, one round trip.

    The simple query protocol carries both statements in one message, so the arrays are
    inlined as literals; PostgreSQL plans only a function call, whose own plans are cached.
    `at` is the ledger's time, an SQL expression (meter.ledger.clock); `shard` the batch's
    shard on Citus (0 on plain PostgreSQL).
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
        texts([k[0] for k in scopes]),
        texts([k[1] for k in scopes]),
        texts([k[2] for k in scopes]),
        texts([k[0] for k in lots]),
        texts([k[1] for k in lots]),
    ]
    call = ", ".join(map(_literal, args))
    more = ", ".join(map(_literal, tail))
    flag = "true" if skip_locked else "false"
    return f"BEGIN; SELECT meter_load({call}, {flag}, {more}, {at}, {int(shard)})::text"


loads = orjson.loads

# Spent lots that loaded holds drew from (a commit gives credits back to them): rare, so a
# round trip of its own rather than a wider read on every batch. A LATERAL probe with LIMIT 1
# stays one index lookup per key whatever the planner thinks of the table's size. Its
# workspaces again as a constant array: Citus cannot push a LIMIT that refers to a table
# function's column down to the shards without one to prune by.
LOTS = Statement(
    f"SELECT {_cols(t.lots, 'l')} FROM unnest(%s::text[], %s::int8[]) AS r(ws, id),"
    " LATERAL (SELECT * FROM lots WHERE workspace_id = r.ws AND lot_id = r.id"
    " AND workspace_id = ANY(%s::text[]) LIMIT 1) l",
    (texts, ints),
    prune=True,
)

# Writes: one statement per table and kind of change.

INSERT_LOTS = insert(t.lots)
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
INSERT_ENTRIES = insert(t.journal)
INSERT_ALERTS = insert(t.alerts)


# A batch's events go through meter_events (migration 0009), in the batch's write message:
# it takes their positions in the shard group's feed under the group's feed head.
EVENTS_CALL = "SELECT meter_events({}); "
EVENT_ENCODERS: tuple[Encode, ...] = (texts, ints, texts, times, texts)

UPSERT_SPEND = upsert(t.budget_spend, ("workspace_id", "budget_id", "scope_value"))
UPSERT_TOPUPS = upsert(t.auto_topups, ("workspace_id",))
WORKSPACE_CHANGES = tuple(
    c for c in rows.columns(t.workspaces) if c not in ("workspace_id", "created_at", "updated_at")
)


def _together(parts: Sequence[Statement]) -> Statement:
    """Statements as the data-modifying CTEs of one: one message, one plan."""
    ctes = ", ".join(f"w{i} AS ({p.sql})" for i, p in enumerate(parts))
    return Statement(f"WITH {ctes} SELECT 1", tuple(e for p in parts for e in p.encoders))


_TYPE = re.compile(r"::([a-z0-9_]+(?:\[\])?)")


def _prepare(name: str, statement: Statement) -> str:
    """PREPARE of a statement: its %s placeholders numbered, their types declared (each is
    followed by its cast)."""
    parts = statement.sql.split("%s")
    sql = parts[0] + "".join(f"${i}{rest}" for i, rest in enumerate(parts[1:], 1))
    types = []
    for rest in parts[1:]:
        found = _TYPE.match(rest)
        assert found is not None, f"a parameter without its type: %s{rest[:40]}"
        types.append(found.group(1))
    return f"PREPARE {name}({', '.join(types)}) AS {sql}"


def write_parts(*, citus: bool = False) -> tuple[Statement, ...]:
    """Every change of a batch, in this order (on Citus, as statements it routes). The Book
    never inserts and updates the same row in one batch (a new lot or hold is not also a
    changed one), which the CTEs need: they share one snapshot."""
    return (
        INSERT_LOTS,
        update(t.lots, ("workspace_id", "lot_id"), ("remaining",), citus=citus),
        # Lots whose state or credits.expiring flag changed (rare): a part of their own, so
        # that the common one stays as narrow as it is. A lot is in one of the two, never both.
        update(
            t.lots,
            ("workspace_id", "lot_id"),
            ("remaining", "state", "expiring_noticed"),
            citus=citus,
        ),
        INSERT_HOLDS,
        update(t.holds, ("workspace_id", "hold_id"), HOLD_CHANGES, citus=citus),
        INSERT_ENTRIES,
        INSERT_ALERTS,
        UPSERT_SPEND,
        UPSERT_TOPUPS,
        update(
            t.workspaces,
            ("workspace_id",),
            WORKSPACE_CHANGES,
            extra="updated_at = now()",
            citus=citus,
        ),
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

    def __init__(self, *, citus: bool = False) -> None:
        self.parts = write_parts(citus=citus)
        # The combinations each connection has prepared; None: unknown after a failure.
        self._prepared: weakref.WeakKeyDictionary[Any, set[int] | None] = (
            weakref.WeakKeyDictionary()
        )

    def message(
        self,
        conn: Any,
        rows: Sequence[Sequence[Sequence[Any]]],
        *,
        events: Sequence[Sequence[Any]] = (),
        feed_key: str = "",
        guard: bool = False,
    ) -> str:
        """The message for one connection; `rows` holds each of write_parts()' rows, and
        `events` the batch's event rows, which take positions in the feed of `feed_key`'s
        shard group. With `guard`, the transaction commits only while a synchronous standby
        streams (SYNC_GUARD)."""
        mask = sum(1 << i for i, r in enumerate(rows) if r)
        parts = [p for p, r in zip(self.parts, rows, strict=True) if r]
        args = [_literal(a) for p, r in zip(self.parts, rows, strict=True) if r for a in p.rows(r)]
        name = f"meter_write_{mask}"
        head = ""
        prepared = self._prepared.get(conn, set())
        if prepared is None:
            # A failed message may or may not have prepared its statement (PREPARE outlives
            # a rollback): start this connection's set again from nothing.
            head, prepared = "DEALLOCATE ALL; ", set()
        self._prepared[conn] = prepared
        if parts and mask not in prepared:
            head += _prepare(name, _together(parts)) + "; "
            prepared.add(mask)
        check = f"SELECT {SYNC_GUARD}(); " if guard else ""
        feed = ""
        if events:
            columns = list(zip(*events, strict=True))
            values = [enc(col) for enc, col in zip(EVENT_ENCODERS, columns, strict=True)]
            feed = EVENTS_CALL.format(", ".join(map(_literal, [feed_key, *values])))
        write = f"EXECUTE {name}({', '.join(args)}); " if parts else ""
        return f"{head}{write}{feed}{check}COMMIT"

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
