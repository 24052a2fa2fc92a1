"""Batch functions: a ledger batch reads in one statement and writes in one.

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-25

The hot path's cost is statements, not rows: each statement a client sends costs it a
round trip and its driver a fixed amount of work. meter_load locks a batch's workspace rows
(in workspace_id order, so batches never deadlock) and then, each query with a fresh
snapshot that sees what the previous lock holder committed, returns every row the batch
needs as one JSON document. meter_write applies every change of the batch, one set-based
statement per table. Rows travel as JSON objects named like the tables' columns, so the
functions follow the tables without restating them.

Change notices leave the transactions: see DROP_NOTIFY_TRIGGERS.
"""

from collections.abc import Sequence

from alembic import op

revision: str = "0002"
down_revision: str | None = "0001"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

LOAD = """
CREATE OR REPLACE FUNCTION meter_load(req jsonb) RETURNS jsonb
LANGUAGE plpgsql VOLATILE AS $$
DECLARE
  ids text[] := ARRAY(SELECT jsonb_array_elements_text(req->'ids'));
  ws text[] := ARRAY(SELECT jsonb_array_elements_text(req->'ws'));
  rids text[] := ARRAY(SELECT jsonb_array_elements_text(req->'rids'));
  sweep text[] := ARRAY(SELECT jsonb_array_elements_text(req->'sweep'));
  locked jsonb;
  result jsonb;
BEGIN
  IF jsonb_array_length(req->'create') > 0 THEN
    INSERT INTO workspaces (workspace_id)
      SELECT c FROM jsonb_array_elements_text(req->'create') c ORDER BY 1
      ON CONFLICT DO NOTHING;
  END IF;
  IF (req->>'skip_locked')::boolean THEN
    SELECT coalesce(jsonb_agg(to_jsonb(w) ORDER BY w.workspace_id), '[]') INTO locked FROM (
      SELECT * FROM workspaces WHERE workspace_id = ANY(ids)
      ORDER BY workspace_id FOR UPDATE SKIP LOCKED) w;
  ELSE
    SELECT coalesce(jsonb_agg(to_jsonb(w) ORDER BY w.workspace_id), '[]') INTO locked FROM (
      SELECT * FROM workspaces WHERE workspace_id = ANY(ids)
      ORDER BY workspace_id FOR UPDATE) w;
  END IF;
  ids := ARRAY(SELECT jsonb_array_elements(locked)->>'workspace_id');
  result := jsonb_build_object('now', now(), 'workspaces', locked);
  WITH wanted AS (
    SELECT r.ws, r.rid FROM unnest(ws, rids) AS r(ws, rid) WHERE r.ws = ANY(ids)
  ), found AS (
    SELECT h.* FROM wanted JOIN holds h ON h.workspace_id = wanted.ws
      AND h.request_id = wanted.rid
    UNION
    SELECT h.* FROM holds h WHERE h.workspace_id = ANY(sweep) AND h.workspace_id = ANY(ids)
      AND h.state = 1 AND h.expires_at <= now()
  )
  SELECT result || jsonb_build_object(
    'holds', coalesce((SELECT jsonb_agg(to_jsonb(f)) FROM found f), '[]'),
    'lots', coalesce((SELECT jsonb_agg(to_jsonb(l)) FROM (
        SELECT * FROM lots WHERE workspace_id = ANY(ids) AND remaining > 0
        UNION
        SELECT l.* FROM found f JOIN lots l ON l.workspace_id = f.workspace_id
          AND l.lot_id = ANY(f.draw_lots)) l), '[]'),
    'entries', CASE WHEN (req->>'entries')::boolean THEN coalesce((
        SELECT jsonb_agg(to_jsonb(j)) FROM wanted
        JOIN journal j ON j.workspace_id = wanted.ws AND j.request_id = wanted.rid
          AND j.kind IN (1, 4, 5)), '[]') ELSE '[]' END)
  INTO result;
  RETURN result;
END $$;
"""

WRITE = """
CREATE OR REPLACE FUNCTION meter_write(doc jsonb) RETURNS void
LANGUAGE plpgsql VOLATILE AS $$
BEGIN
  IF jsonb_array_length(doc->'new_lots') > 0 THEN
    INSERT INTO lots SELECT * FROM jsonb_populate_recordset(NULL::lots, doc->'new_lots');
  END IF;
  IF jsonb_array_length(doc->'lots') > 0 THEN
    UPDATE lots l SET remaining = t.remaining
      FROM jsonb_populate_recordset(NULL::lots, doc->'lots') t
      WHERE l.workspace_id = t.workspace_id AND l.lot_id = t.lot_id;
  END IF;
  IF jsonb_array_length(doc->'new_holds') > 0 THEN
    INSERT INTO holds SELECT * FROM jsonb_populate_recordset(NULL::holds, doc->'new_holds');
  END IF;
  IF jsonb_array_length(doc->'holds') > 0 THEN
    UPDATE holds h SET state = t.state, charged = t.charged, shortfall = t.shortfall,
        refunded = t.refunded, late = t.late, labels = t.labels, draw_lots = t.draw_lots,
        draw_amounts = t.draw_amounts, commit_fingerprint = t.commit_fingerprint,
        expires_at = t.expires_at, finished_at = t.finished_at
      FROM jsonb_populate_recordset(NULL::holds, doc->'holds') t
      WHERE h.workspace_id = t.workspace_id AND h.hold_id = t.hold_id;
  END IF;
  IF jsonb_array_length(doc->'entries') > 0 THEN
    INSERT INTO journal SELECT * FROM jsonb_populate_recordset(NULL::journal, doc->'entries');
  END IF;
  IF jsonb_array_length(doc->'alerts') > 0 THEN
    INSERT INTO alerts SELECT * FROM jsonb_populate_recordset(NULL::alerts, doc->'alerts');
  END IF;
  IF jsonb_array_length(doc->'workspaces') > 0 THEN
    UPDATE workspaces w SET balance = t.balance, held = t.held,
        lifetime_used = t.lifetime_used, lifetime_granted = t.lifetime_granted,
        low_threshold = t.low_threshold, critical_threshold = t.critical_threshold,
        alert_level = t.alert_level, hold_seq = t.hold_seq, lot_seq = t.lot_seq,
        entry_seq = t.entry_seq, alert_seq = t.alert_seq, next_expiry_at = t.next_expiry_at,
        last_entry_at = t.last_entry_at, last_entry_kind = t.last_entry_kind,
        last_entry_amount = t.last_entry_amount, last_entry_operation = t.last_entry_operation,
        updated_at = now()
      FROM jsonb_populate_recordset(NULL::workspaces, doc->'workspaces') t
      WHERE w.workspace_id = t.workspace_id;
  END IF;
END $$;
"""


# NOTIFY inside the ledger's transactions would serialize their commits (PostgreSQL holds
# a global lock across the WAL flush of every transaction that notified), so the triggers of
# 0001 go: committed changes are announced after commit (meter.storage.announcer).
DROP_NOTIFY_TRIGGERS = """
DROP TRIGGER IF EXISTS workspaces_notify ON workspaces;
DROP TRIGGER IF EXISTS alerts_notify ON alerts;
"""

RESTORE_NOTIFY_TRIGGERS = """
CREATE TRIGGER workspaces_notify AFTER INSERT OR UPDATE ON workspaces
  FOR EACH ROW EXECUTE FUNCTION meter_notify_balance();
CREATE TRIGGER alerts_notify AFTER INSERT ON alerts
  FOR EACH ROW EXECUTE FUNCTION meter_notify_alert();
"""


# Workspace and lot rows are rewritten by every batch that touches them. Room on each page
# keeps those updates heap-only (no indexed column changes), so PostgreSQL prunes old
# versions as it goes; an eager autovacuum keeps the few hot pages from bloating.
HOT_TABLES = """
ALTER TABLE workspaces SET (fillfactor = 30, autovacuum_vacuum_scale_factor = 0,
  autovacuum_vacuum_threshold = 5000, autovacuum_vacuum_cost_delay = 0);
ALTER TABLE lots SET (fillfactor = 50, autovacuum_vacuum_scale_factor = 0,
  autovacuum_vacuum_threshold = 5000, autovacuum_vacuum_cost_delay = 0);
"""


def upgrade() -> None:
    op.execute(LOAD)
    op.execute(WRITE)
    op.execute(DROP_NOTIFY_TRIGGERS)
    op.execute(HOT_TABLES)


def downgrade() -> None:
    op.execute(
        "ALTER TABLE workspaces RESET (fillfactor, autovacuum_vacuum_scale_factor,"
        " autovacuum_vacuum_threshold, autovacuum_vacuum_cost_delay)"
    )
    op.execute(
        "ALTER TABLE lots RESET (fillfactor, autovacuum_vacuum_scale_factor,"
        " autovacuum_vacuum_threshold, autovacuum_vacuum_cost_delay)"
    )
    op.execute(RESTORE_NOTIFY_TRIGGERS)
    op.execute("DROP FUNCTION IF EXISTS meter_write(jsonb), meter_load(jsonb)")
