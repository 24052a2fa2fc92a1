"""Credit policies (DESIGN.md §10): lot categories and priorities, pending grants, member
limits and auto top-up.

Revision ID: 0006
Revises: 0005
Create Date: 2026-12-03

* lots: category (1 paid, 2 promotional, 3 manual; existing lots by their package and
  source), priority (0-100, lower burns first), state (0 active, 1 pending, 2 confirmed,
  3 voided) and a pending grant's request fingerprint. journal.category: the category of the
  lots an entry moved, when they share one.
* member_limits: a workspace's limit per member (actor '' = every member) and period.
  member_spend: each member's running spend, kept only while the workspace has limits
  (workspaces.member_limits): held credits, and what was charged this day, week and month.
* auto_topups: one rule per workspace, with its outstanding request and failure count
  (workspaces.auto_topup says there is one).
* meter_load also reads, for the workspaces that have them, the limits, the spend of the
  members the batch concerns (the actors of its reserves and charges and of the holds it
  loads), the auto top-up rule, and lots by request id (grants, confirmations and voids
  address a lot by its grant's request id, also once it has no credits left).
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0006"
down_revision: str | None = "0005"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

# In meter.storage.tables' order (ledger_sql reads rows by position).
WORKSPACE = (
    "workspace_id, balance, held, lifetime_used, lifetime_granted, low_threshold,"
    " critical_threshold, alert_level, hold_seq, lot_seq, entry_seq, alert_seq, event_seq,"
    " next_expiry_at, next_notice_at, last_entry_at, last_entry_kind, last_entry_amount,"
    " last_entry_operation, member_limits, auto_topup, created_at"
)
HOLD = (
    "workspace_id, hold_id, request_id, kind, state, amount, charged, shortfall, refunded, late,"
    " operation, catalog_version, actor_id, labels, draw_lots, draw_amounts, fingerprint,"
    " commit_fingerprint, expires_at, created_at, finished_at"
)
LOT = (
    "workspace_id, lot_id, request_id, amount, remaining, expires_at, source, package,"
    " created_at, expiring_noticed, category, priority, state, fingerprint"
)
ENTRY = (
    "workspace_id, entry_id, kind, amount, balance_after, operation, actor_id, request_id, labels,"
    " shortfall, late, reason, package, fingerprint, created_at, category"
)
LIMIT = "workspace_id, actor_id, period, credit_limit"
SPEND = "workspace_id, actor_id, held, day_used, week_used, month_used, noticed, updated_at"
TOPUP = (
    "workspace_id, enabled, threshold, package, amount, monthly_limit, failures, seq,"
    " outstanding, requested_at, month_start, month_count, last_failed"
)


def _row(alias: str, columns: str) -> str:
    return "json_build_array(" + ", ".join(f"{alias}.{c.strip()}" for c in columns.split(",")) + ")"


LOAD = f"""
CREATE FUNCTION meter_load(
  ids text[], create_ids text[], hold_ws text[], hold_rids text[], entry_ws text[],
  entry_rids text[], sweep text[], skip_locked boolean, actor_ws text[], actor_ids text[],
  lot_ws text[], lot_rids text[]
) RETURNS json
LANGUAGE plpgsql VOLATILE
SET enable_seqscan = off SET enable_bitmapscan = off SET enable_hashjoin = off
SET enable_mergejoin = off SET enable_material = off SET enable_indexscan = on
SET enable_nestloop = on SET plan_cache_mode = force_generic_plan
AS $$
DECLARE
  locked text[];
  limited text[];
  topped text[];
  workspaces json;
  holds json;
  overdue json;
  lots json;
  entries json;
  limits json;
  spend json;
  topups json;
  by_rid json;
BEGIN
  IF cardinality(create_ids) > 0 THEN
    INSERT INTO workspaces (workspace_id) SELECT unnest(create_ids) ORDER BY 1
      ON CONFLICT DO NOTHING;
  END IF;
  -- Workspaces are locked once each, in workspace_id order: every writer takes them in that
  -- order, so batches cannot deadlock.
  IF skip_locked THEN
    SELECT array_agg(w.workspace_id), json_agg({_row("w", WORKSPACE)}),
        array_agg(w.workspace_id) FILTER (WHERE w.member_limits),
        array_agg(w.workspace_id) FILTER (WHERE w.auto_topup)
      INTO locked, workspaces, limited, topped FROM (
        SELECT * FROM workspaces WHERE workspace_id = ANY(ids)
        ORDER BY workspace_id FOR UPDATE SKIP LOCKED) w;
  ELSE
    SELECT array_agg(w.workspace_id), json_agg({_row("w", WORKSPACE)}),
        array_agg(w.workspace_id) FILTER (WHERE w.member_limits),
        array_agg(w.workspace_id) FILTER (WHERE w.auto_topup)
      INTO locked, workspaces, limited, topped FROM (
        SELECT * FROM workspaces WHERE workspace_id = ANY(ids)
        ORDER BY workspace_id FOR UPDATE) w;
  END IF;
  IF locked IS NULL THEN
    RETURN json_build_array(now(), '[]'::json, '[]'::json, '[]'::json, '[]'::json, '[]'::json,
      '[]'::json, '[]'::json, '[]'::json, '[]'::json);
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
  IF cardinality(lot_ws) > 0 THEN
    SELECT json_agg({_row("l", LOT)}) INTO by_rid
      FROM unnest(lot_ws, lot_rids) AS r(ws, rid),
      LATERAL (SELECT * FROM lots WHERE workspace_id = r.ws AND request_id = r.rid LIMIT 1) l
      WHERE r.ws = ANY(locked);
  END IF;
  IF limited IS NOT NULL THEN
    SELECT json_agg({_row("m", LIMIT)}) INTO limits FROM member_limits m
      WHERE m.workspace_id = ANY(limited);
    SELECT json_agg({_row("s", SPEND)}) INTO spend FROM (
        SELECT r.ws, r.actor FROM unnest(actor_ws, actor_ids) AS r(ws, actor)
          WHERE r.ws = ANY(limited)
        UNION
        SELECT h.workspace_id, h.actor_id
          FROM unnest(hold_ws, hold_rids) AS r(ws, rid),
          LATERAL (SELECT workspace_id, actor_id FROM holds
                   WHERE workspace_id = r.ws AND request_id = r.rid LIMIT 1) h
          WHERE r.ws = ANY(limited)
        UNION
        SELECT h.workspace_id, h.actor_id FROM holds h
          WHERE h.workspace_id = ANY(sweep) AND h.workspace_id = ANY(limited)
            AND h.state = 1 AND h.expires_at <= now()
      ) k,
      LATERAL (SELECT * FROM member_spend WHERE workspace_id = k.ws AND actor_id = k.actor
               LIMIT 1) s;
  END IF;
  IF topped IS NOT NULL THEN
    SELECT json_agg({_row("t", TOPUP)}) INTO topups FROM auto_topups t
      WHERE t.workspace_id = ANY(topped);
  END IF;
  RETURN json_build_array(now(), workspaces,
    coalesce(holds, '[]'::json), coalesce(overdue, '[]'::json),
    coalesce(lots, '[]'::json), coalesce(entries, '[]'::json),
    coalesce(by_rid, '[]'::json), coalesce(limits, '[]'::json),
    coalesce(spend, '[]'::json), coalesce(topups, '[]'::json));
END $$;
"""

OLD_SIGNATURE = "text[], text[], text[], text[], text[], text[], text[], boolean"


def _smallint(name: str, default: str) -> sa.Column[object]:
    return sa.Column(name, sa.SmallInteger(), server_default=default, nullable=False)


def upgrade() -> None:
    op.add_column("lots", _smallint("category", "1"))
    op.add_column("lots", _smallint("priority", "50"))
    op.add_column("lots", _smallint("state", "0"))
    op.add_column("lots", sa.Column("fingerprint", sa.Text(), server_default="", nullable=False))
    op.execute(
        "UPDATE lots SET category = CASE WHEN package <> '' OR source = 'purchase' THEN 1"
        " WHEN source LIKE 'promo%' THEN 2 ELSE 3 END"
    )
    op.execute("CREATE INDEX ix_lots_request ON lots (workspace_id, request_id)")
    op.add_column("journal", _smallint("category", "0"))
    op.add_column(
        "workspaces",
        sa.Column("member_limits", sa.Boolean(), server_default="false", nullable=False),
    )
    op.add_column(
        "workspaces", sa.Column("auto_topup", sa.Boolean(), server_default="false", nullable=False)
    )
    op.execute(
        """
        CREATE TABLE member_limits (
          workspace_id text NOT NULL,
          actor_id text NOT NULL,
          period smallint NOT NULL,
          credit_limit bigint NOT NULL,
          updated_at timestamptz NOT NULL DEFAULT now(),
          CONSTRAINT pk_member_limits PRIMARY KEY (workspace_id, actor_id, period),
          CONSTRAINT ck_member_limits_limit CHECK (credit_limit >= 0)
        );
        CREATE TABLE member_spend (
          workspace_id text NOT NULL,
          actor_id text NOT NULL,
          held bigint NOT NULL DEFAULT 0,
          day_used bigint NOT NULL DEFAULT 0,
          week_used bigint NOT NULL DEFAULT 0,
          month_used bigint NOT NULL DEFAULT 0,
          noticed smallint NOT NULL DEFAULT 0,
          updated_at timestamptz NOT NULL,
          CONSTRAINT pk_member_spend PRIMARY KEY (workspace_id, actor_id)
        );
        CREATE TABLE auto_topups (
          workspace_id text NOT NULL,
          enabled boolean NOT NULL,
          threshold bigint NOT NULL,
          package text NOT NULL DEFAULT '',
          amount bigint NOT NULL DEFAULT 0,
          monthly_limit integer NOT NULL,
          failures integer NOT NULL DEFAULT 0,
          seq bigint NOT NULL DEFAULT 0,
          outstanding text NOT NULL DEFAULT '',
          requested_at timestamptz,
          month_start timestamptz,
          month_count integer NOT NULL DEFAULT 0,
          last_failed text NOT NULL DEFAULT '',
          CONSTRAINT pk_auto_topups PRIMARY KEY (workspace_id)
        );
        """
    )
    op.execute(f"DROP FUNCTION meter_load({OLD_SIGNATURE})")
    op.execute(LOAD)


def downgrade() -> None:
    import runpy
    from pathlib import Path

    op.execute(f"DROP FUNCTION meter_load({OLD_SIGNATURE}, text[], text[], text[], text[])")
    events = runpy.run_path(str(Path(__file__).with_name("0005_events.py")))
    op.execute("DROP TABLE auto_topups, member_spend, member_limits")
    op.drop_column("workspaces", "auto_topup")
    op.drop_column("workspaces", "member_limits")
    op.drop_column("journal", "category")
    op.execute("DROP INDEX ix_lots_request")
    for name in ("fingerprint", "state", "priority", "category"):
        op.drop_column("lots", name)
    op.execute(events["_load"](events["WORKSPACE"], events["LOT"]))
