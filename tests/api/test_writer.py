"""A batch's write message: prepared per connection, and still right after one fails."""

from __future__ import annotations

import uuid

import psycopg
import pytest

from meter.storage import ledger_sql as sql
from meter.storage.db import libpq_url


def _workspace_update(ws: str, held: int) -> list[list[tuple[object, ...]]]:
    """write_parts()' rows for a batch that only changes a workspace's row."""
    row = (
        ws,
        100,
        held,
        0,
        100,
        100,
        10,
        1,
        0,
        0,
        1,
        0,
        0,
        None,
        None,
        None,
        None,
        0,
        "",
        False,
        False,
        7,
        "{}",
        None,
        False,
    )
    return [[] for _ in sql.write_parts()[:-1]] + [[row]]


def test_a_failed_write_leaves_the_connection_able_to_write_again(app, database_url):
    """PREPARE outlives the rollback of its message, so after a failure the writer cannot
    know what the connection has prepared; it must start over rather than fail for good."""
    ws = f"ws-{uuid.uuid4().hex[:12]}"
    writer = sql.Writer()
    with psycopg.connect(libpq_url(database_url), autocommit=True) as conn:
        conn.execute("INSERT INTO workspaces (workspace_id, balance) VALUES (%s, 100)", [ws])
        # The first message meets a transaction that has already failed, so nothing in it
        # runs, its PREPARE included; the second fails in its EXECUTE, after its PREPARE.
        conn.execute("BEGIN")
        with pytest.raises(psycopg.errors.DivisionByZero):
            conn.execute("SELECT 1 / 0")
        with pytest.raises(psycopg.errors.InFailedSqlTransaction):
            conn.execute(writer.message(conn, _workspace_update(ws, held=3)))
        writer.failed(conn)
        conn.execute("ROLLBACK")
        conn.execute("BEGIN")
        with pytest.raises(psycopg.errors.CheckViolation):
            conn.execute(writer.message(conn, _workspace_update(ws, held=-1)))
        writer.failed(conn)
        conn.execute("ROLLBACK")
        for held in (5, 7):  # the statement prepared anew, then reused
            conn.execute("BEGIN")
            conn.execute(writer.message(conn, _workspace_update(ws, held=held)))
            assert (
                held
                == conn.execute(
                    "SELECT held FROM workspaces WHERE workspace_id = %s", [ws]
                ).fetchone()[0]
            )  # type: ignore[index]
