"""meter_load reads a batch's state by key, on plans that cannot drift; meter_write goes.

Revision ID: 0004
Revises: 0003
Create Date: 2026-12-01

The batch functions of 0002 exchanged a batch's rows as jsonb documents and ran their queries
on plans that PostgreSQL cached inside the functions while the tables were small: as holds
and the journal grew, their lookups went on scanning them (a journal probe became a nested
loop over every grant of the ledger). Now:

* meter_load takes the batch's keys as arrays and finds every row it returns by a primary or
  unique key. Each probe is a LATERAL subquery with LIMIT 1, which the planner cannot pull up
  into a join, so it stays one index lookup per key; and the function runs with scans, hash
  and merge joins and materialization off and generic plans, so no statistics (fresh, stale
  or missing) can change that. It answers with one json value of positional arrays, the
  cheapest form for PostgreSQL to build and for the server to read.
* Writes are one statement of data-modifying CTEs over column arrays (meter.storage.ledger_sql),
  prepared once per connection: meter_write is no longer needed.

Each query of meter_load has its own snapshot (the function is VOLATILE), taken after the
lock: it sees what the lock's previous holder committed.
"""

from collections.abc import Sequence

from alembic import op

revision: str = "0004"
down_revision: str | None = "0003"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

WORKSPACE = (
    "workspace_id, balance, held, lifetime_used, lifetime_granted, low_threshold,"
    " critical_threshold, alert_level, hold_seq, lot_seq, entry_seq, alert_seq, next_expiry_at,"
    " last_entry_at, last_entry_kind, last_entry_amount, last_entry_operation, created_at"
)
HOLD = (
    "workspace_id, hold_id, request_id, kind, state, amount, charged, shortfall, refunded, late,"
    " operation, catalog_version, actor_id, labels, draw_lots, draw_amounts, fingerprint,"
    " commit_fingerprint, expires_at, created_at, finished_at"
)
LOT = "workspace_id, lot_id, request_id, amount, remaining, expires_at, source, package, created_at"
ENTRY = (
    "workspace_id, entry_id, kind, amount, balance_after, operation, actor_id, request_id, labels,"
    " shortfall, late, reason, package, fingerprint, created_at"
)


def _row(alias: str, columns: str) -> str:
    return "json_build_array(" + ", ".join(f"{alias}.{c.strip()}" for c in columns.split(",")) + ")"


LOAD = f"""
CREATE OR REPLACE FUNCTION meter_load(
  ids text[], create_ids text[], hold_ws text[], hold_rids text[], entry_ws text[],
  entry_rids text[], sweep text[], skip_locked boolean
) RETURNS json
LANGUAGE plpgsql VOLATILE
SET enable_seqscan = off SET enable_bitmapscan = off SET enable_hashjoin = off
SET enable_mergejoin = off SET enable_material = off SET enable_indexscan = on
SET enable_nestloop = on SET plan_cache_mode = force_generic_plan
AS $$
DECLARE
  locked text[];
  workspaces json;
  holds json;
  overdue json;
  lots json;
  entries json;
BEGIN
  IF cardinality(create_ids) > 0 THEN
    INSERT INTO workspaces (workspace_id) SELECT unnest(create_ids) ORDER BY 1
      ON CONFLICT DO NOTHING;
  END IF;
  -- Workspaces are locked once each, in workspace_id order: every writer takes them in that
  -- order, so batches cannot deadlock.
  IF skip_locked THEN
    SELECT array_agg(w.workspace_id), json_agg({_row("w", WORKSPACE)})
      INTO locked, workspaces FROM (
        SELECT * FROM workspaces WHERE workspace_id = ANY(ids)
        ORDER BY workspace_id FOR UPDATE SKIP LOCKED) w;
  ELSE
    SELECT array_agg(w.workspace_id), json_agg({_row("w", WORKSPACE)})
      INTO locked, workspaces FROM (
        SELECT * FROM workspaces WHERE workspace_id = ANY(ids)
        ORDER BY workspace_id FOR UPDATE) w;
  END IF;
  IF locked IS NULL THEN
    RETURN json_build_array(now(), '[]'::json, '[]'::json, '[]'::json, '[]'::json, '[]'::json);
  END IF;
  SELECT json_agg({_row("h", HOLD)}) INTO holds
    FROM unnest(hold_ws, hold_rids) AS r(ws, rid),
    LATERAL (SELECT * FROM holds WHERE workspace_id = r.ws AND request_id = r.rid LIMIT 1) h
    WHERE r.ws = ANY(locked);
  IF cardinality(sweep) > 0 THEN
    SELECT json_agg({_row("h", HOLD)}) INTO overdue FROM holds h
      WHERE h.workspace_id = ANY(sweep) AND h.workspace_id = ANY(locked)
        AND h.state = 1 AND h.expires_at <= now();
  END IF;
  SELECT json_agg({_row("l", LOT)}) INTO lots FROM lots l
    WHERE l.workspace_id = ANY(locked) AND l.remaining > 0;
  IF cardinality(entry_ws) > 0 THEN
    SELECT json_agg({_row("j", ENTRY)}) INTO entries
      FROM unnest(entry_ws, entry_rids) AS r(ws, rid),
      LATERAL (SELECT * FROM journal WHERE workspace_id = r.ws AND request_id = r.rid
               AND kind IN (1, 4, 5) LIMIT 1) j
      WHERE r.ws = ANY(locked);
  END IF;
  RETURN json_build_array(now(), workspaces,
    coalesce(holds, '[]'::json), coalesce(overdue, '[]'::json),
    coalesce(lots, '[]'::json), coalesce(entries, '[]'::json));
END $$;
"""


def upgrade() -> None:
    op.execute("DROP FUNCTION IF EXISTS meter_write(jsonb), meter_load(jsonb)")
    op.execute(LOAD)


def downgrade() -> None:
    import runpy
    from pathlib import Path

    op.execute(
        "DROP FUNCTION IF EXISTS meter_load(text[], text[], text[], text[], text[], text[],"
        " text[], boolean)"
    )
    batch = runpy.run_path(str(Path(__file__).with_name("0002_batch_functions.py")))
    op.execute(batch["LOAD"])
    op.execute(batch["WRITE"])
