"""Scratch databases, the PostgreSQL facts a reader needs beside the figures, and bulk rows."""

from __future__ import annotations

import argparse
import os
import sys
import time
import uuid

import sqlalchemy as sa

from bench.cpu import PgTree
from bench.load import OPERATION
from meter.storage.db import normalize_url

# Settings that change what the figures mean; printed in the header of every run.
SETTINGS = (
    "server_version",
    "synchronous_commit",
    "fsync",
    "autovacuum",
    "shared_buffers",
    "max_wal_size",
)
# The bulk ledger's rows are spread over this many days before the run, as a busy ledger's are.
BULK_SPAN_DAYS = 30
BULK_CHUNK_WORKSPACES = 100


def _admin(base: str) -> sa.Engine:
    return sa.create_engine(normalize_url(base), isolation_level="AUTOCOMMIT")


def add_database_url(parser: argparse.ArgumentParser) -> None:
    """The --database-url option every benchmark takes: the server its scratch databases go
    on (METER_BENCH_DATABASE_URL, default the local one)."""
    parser.add_argument(
        "--database-url",
        default=os.environ.get(
            "METER_BENCH_DATABASE_URL", "postgresql://postgres@127.0.0.1:5432/postgres"
        ),
    )


def fresh_database(base: str) -> str:
    name = f"meter_bench_{uuid.uuid4().hex[:8]}"
    admin = _admin(base)
    with admin.connect() as c:
        c.execute(sa.text(f'CREATE DATABASE "{name}"'))
    admin.dispose()
    return sa.engine.make_url(normalize_url(base)).set(database=name).render_as_string(False)


def drop_database(base: str, url: str) -> None:
    name = sa.engine.make_url(url).database
    admin = _admin(base)
    with admin.connect() as c:
        c.execute(sa.text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
    admin.dispose()


def settings(url: str) -> dict[str, str]:
    eng = sa.create_engine(normalize_url(url))
    with eng.connect() as c:
        rows = c.execute(
            sa.text("SELECT name, current_setting(name) FROM unnest(CAST(:n AS text[])) name"),
            {"n": list(SETTINGS)},
        ).all()
    eng.dispose()
    return {name: value for name, value in rows}


def pg_tree(url: str) -> PgTree | None:
    """The process tree of the postmaster serving `url`, when it runs on this host."""
    eng = sa.create_engine(normalize_url(url))
    with eng.connect() as c:
        backend = int(c.execute(sa.text("SELECT pg_backend_pid()")).scalar_one())
        tree = PgTree.from_backend(backend, str(sa.engine.make_url(url).database))
    eng.dispose()
    return tree


HOLDS_SQL = """
INSERT INTO holds (workspace_id, hold_id, request_id, kind, state, amount, charged,
  shortfall, refunded, late, operation, catalog_version, actor_id, labels, draw_lots,
  draw_amounts, fingerprint, commit_fingerprint, expires_at, created_at, finished_at)
SELECT w.workspace_id, g.hold_id, 'bulk-' || (g.hold_id - w.hold_seq), 1, 2, 0, 0,
  0, 0, false, :op, 1, '', NULL, '{}',
  '{}', lpad(to_hex(g.hold_id), 24, '0'), lpad(to_hex(g.hold_id), 24, 'f'),
  t + interval '15 minutes', t, t + interval '1 second'
FROM workspaces w,
  LATERAL generate_series(w.hold_seq + 1, w.hold_seq + :per) AS g(hold_id),
  LATERAL (SELECT now() - make_interval(secs => (w.hold_seq + :per - g.hold_id) * :step)) x(t)
WHERE w.workspace_id = ANY(:ids)
"""

JOURNAL_SQL = """
INSERT INTO journal (workspace_id, entry_id, kind, amount, balance_after, operation,
  actor_id, request_id, labels, shortfall, late, reason, package, fingerprint, created_at)
SELECT w.workspace_id, g.entry_id, 2, 0, w.balance, :op,
  '', 'bulk-' || (g.entry_id - w.entry_seq), NULL, 0, false, '', '', '',
  now() - make_interval(secs => (w.entry_seq + :per - g.entry_id) * :step)
FROM workspaces w, LATERAL generate_series(w.entry_seq + 1, w.entry_seq + :per) AS g(entry_id)
WHERE w.workspace_id = ANY(:ids)
"""

COUNTERS_SQL = """
UPDATE workspaces SET hold_seq = hold_seq + :per, entry_seq = entry_seq + :per
WHERE workspace_id = ANY(:ids)
"""


def bulk_ledger(url: str, rows: int, workspaces: list[str]) -> None:
    """Load `rows` finished jobs, each a COMMITTED hold and its CHARGE journal entry.

    Spread evenly over `workspaces`, with the workspaces' hold_seq/entry_seq moved past them
    so the server's new ids never collide. The jobs charge 0 credits, so balances, lots and
    the journal's running balance stay exactly as they were (an audit still adds up). Every
    column is named: a column added to the schema without a default fails here, loudly.
    Each series is computed from its workspace row (LATERAL), so PostgreSQL emits one
    workspace's rows together and the index inserts walk each key range in order. The
    request ids ("bulk-N", N the job's number in its workspace) pair each hold with its
    entry, as a real commit's are.
    """
    per = rows // len(workspaces)
    params = {"per": per, "op": OPERATION, "step": BULK_SPAN_DAYS * 86400 / max(per, 1)}
    eng = sa.create_engine(normalize_url(url))
    t0 = time.perf_counter()
    # One transaction per slice of workspaces: bounded transactions, and progress to watch.
    for i in range(0, len(workspaces), BULK_CHUNK_WORKSPACES):
        ids = workspaces[i : i + BULK_CHUNK_WORKSPACES]
        with eng.begin() as c:
            c.execute(sa.text(HOLDS_SQL), {**params, "ids": ids})
            c.execute(sa.text(JOURNAL_SQL), {**params, "ids": ids})
            c.execute(sa.text(COUNTERS_SQL), {"per": per, "ids": ids})
        done = (i + len(ids)) * per
        print(
            f"  bulk rows: {done:,} holds + journal ({time.perf_counter() - t0:.0f} s)",
            file=sys.stderr,
            flush=True,
        )
    with eng.connect().execution_options(isolation_level="AUTOCOMMIT") as c:
        for table in ("holds", "journal", "workspaces"):
            c.execute(sa.text(f"VACUUM ANALYZE {table}"))
        # Write the load's dirty pages back now: a ledger that grew over months has no
        # gigabytes waiting for the checkpointer, and their write-back would compete with the
        # commits' WAL flushes in the phase that follows.
        c.execute(sa.text("CHECKPOINT"))
    eng.dispose()
