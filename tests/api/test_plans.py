"""The hot path's reads stay index lookups whatever the planner knows of the tables.

A plan chosen while a table looks small (no statistics yet, or stale ones) must not go on
scanning it as it grows. meter_load pins its own plans, so this holds for any caller's
session, including one that allows every plan.
"""

from __future__ import annotations

import psycopg

from meter.storage.db import libpq_url
from meterpb.v1 import meter_pb2 as pb
from tests.support import grant, rid

TABLES = (
    "workspaces",
    "holds",
    "lots",
    "journal",
    "member_limits",
    "member_spend",
    "auto_topups",
)


def _scans(conn: psycopg.Connection[tuple[object, ...]]) -> dict[str, tuple[int, int]]:
    """Sequential and index scans of the ledger's tables in this transaction so far."""
    rows = conn.execute(
        "SELECT relname, seq_scan, coalesce(idx_scan, 0) FROM pg_stat_xact_user_tables"
        " WHERE relname = ANY(%s)",
        [list(TABLES)],
    ).fetchall()
    return {str(r[0]): (int(r[1]), int(r[2])) for r in rows}  # type: ignore[call-overload]


async def test_meter_load_finds_rows_by_key_without_scanning_a_table(stub, ws, database_url):
    await grant(stub, ws, 1000)
    # With the policies, so that their reads run too.
    await stub.SetMemberLimit(
        pb.SetMemberLimitRequest(
            workspace_id=ws, actor_id="", period=pb.LIMIT_PERIOD_DAY, limit=10_000
        )
    )
    await stub.SetAutoTopUp(
        pb.SetAutoTopUpRequest(
            workspace_id=ws, enabled=True, threshold=5, package="Starter", monthly_limit=2
        )
    )
    await stub.SetBudget(
        pb.SetBudgetRequest(
            workspace_id=ws,
            budget=pb.Budget(
                budget_id="p1-daily",
                scope_key="project",
                scope_value="p1",
                period=pb.LIMIT_PERIOD_DAY,
                limit=10_000,
            ),
        )
    )
    jobs = [rid() for _ in range(40)]
    for job in jobs:
        await stub.Reserve(
            pb.ReserveRequest(
                workspace_id=ws,
                request_id=job,
                amount=1,
                actor_id="ana",
                labels={"project": "p1"},
            )
        )
    await stub.Commit(pb.CommitRequest(workspace_id=ws, request_id=jobs[0], amount=1))
    keys = "{" + ",".join([*jobs, "never-seen"]) + "}"
    with psycopg.connect(libpq_url(database_url), autocommit=True) as conn:
        # A session that would rather scan: index and bitmap scans off, custom plans, and the
        # tables as the planner sees them (never analyzed in this test database).
        conn.execute("SET enable_indexscan = off")
        conn.execute("SET enable_bitmapscan = off")
        conn.execute("SET plan_cache_mode = force_custom_plan")
        for _ in range(7):  # past the point where a cached plan would become generic
            conn.execute("BEGIN")
            before = _scans(conn)
            doc = conn.execute(
                "SELECT meter_load(%s, '{}', %s, %s, %s, %s, '{}', false,"
                " %s, %s, %s, %s, %s, now(), 0)",
                [
                    "{" + ws + "}",
                    "{" + ",".join([ws] * (len(jobs) + 1)) + "}",
                    keys,
                    "{" + ",".join([ws] * (len(jobs) + 1)) + "}",
                    keys,
                    "{" + ws + "," + ws + "}",
                    "{actor_id,project}",
                    "{ana,p1}",
                    "{" + ws + "}",
                    "{" + jobs[0] + "}",
                ],
            ).fetchone()
            after = _scans(conn)
            conn.execute("ROLLBACK")
            assert doc is not None
            _, workspaces, holds, _, lots, entries, _, budgets, spend, topups = doc[0]
            assert (1, len(jobs), 1, 0) == (len(workspaces), len(holds), len(lots), len(entries))
            assert (2, 2, 1) == (len(budgets), len(spend), len(topups))
            for table in TABLES:
                seq = after.get(table, (0, 0))[0] - before.get(table, (0, 0))[0]
                assert 0 == seq, f"meter_load scanned {table}"
            assert after["holds"][1] > before.get("holds", (0, 0))[1]
