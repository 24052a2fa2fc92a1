"""Budgets and runway (DESIGN.md §13): member limits become budgets of the actor_id key.

Revision ID: 0010
Revises: 0009
Create Date: 2026-12-08

* budgets: a workspace's spend limits, each for a scope (actor_id, or a label key, with one
  value or '' for every value on its own), a period (1 day, 2 week, 3 month, 4 total) and
  warn_at percentages. budget_spend: each budget's spend per value: held now, used in the
  period that starts at period_start, the warn_at marks crossed in it (bits) and whether its
  refusal event was written. Every member limit becomes the budget `member:<actor or *>:
  <period>` of the actor_id key (no warn_at, as member limits had none), its spend started
  from the holds, as SetBudget starts a new budget's; member_limits and member_spend go.
  workspaces.member_limits is workspaces.budgets: the workspace has some.
* workspaces: runway_days (the balance.runway_low threshold, 0: none), burn (credits charged
  less refunds per UTC day, the newest first, 31 days, burn_day the newest's date) and
  runway_low (that notice was sent and not re-armed).
* meter_load reads, for workspaces with budgets, their budgets and the spend of the
  (budget, value) pairs the batch concerns: the scopes of its reserves and charges (passed as
  (workspace, key, value) candidates) and of the holds it loads.
"""

import runpy
from collections.abc import Sequence
from pathlib import Path

from alembic import op

revision: str = "0010"
down_revision: str | None = "0009"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

_0009 = runpy.run_path(str(Path(__file__).with_name("0009_shard_groups.py")))

WORKSPACE = (
    "workspace_id, balance, held, lifetime_used, lifetime_granted, low_threshold,"
    " critical_threshold, alert_level, hold_seq, lot_seq, entry_seq, alert_seq, event_seq,"
    " next_expiry_at, next_notice_at, last_entry_at, last_entry_kind, last_entry_amount,"
    " last_entry_operation, budgets, auto_topup, created_at, updated_at, runway_days, burn,"
    " burn_day, runway_low"
)
BUDGET = "workspace_id, budget_id, scope_key, scope_value, period, credit_limit, warn_at, enabled"
SPEND = "workspace_id, budget_id, scope_value, held, used, period_start, warned, exceeded"
OLD_SIGNATURE = _0009["SIGNATURE"]
SIGNATURE = (
    "text[], text[], text[], text[], text[], text[], text[], boolean, text[], text[], text[],"
    " text[], text[], timestamptz, bigint"
)


def _spend_reads(p: str) -> str:
    """Budgets and the spend of the batch's (budget, value) pairs, for workspaces with
    budgets (`p`: the pruning predicate on Citus, as 0009's)."""
    on = p.replace
    row = _0009["_row"]
    return f"""
  IF budgeted IS NOT NULL THEN
    SELECT json_agg({row("b", BUDGET)} ORDER BY b.budget_id) INTO budget_rows
      FROM budgets b
      WHERE b.workspace_id = ANY(budgeted) {on("$", "b.workspace_id")};
    SELECT json_agg({row("s", SPEND)}) INTO spend FROM (
        SELECT DISTINCT b.workspace_id AS ws, b.budget_id AS bid, c.value
          FROM (
            SELECT r.ws, r.k, r.v FROM unnest(cand_ws, cand_keys, cand_values) AS r(ws, k, v)
              WHERE r.ws = ANY(budgeted)
            UNION ALL
            SELECT h.workspace_id, x.k, x.v
              FROM unnest(hold_ws, hold_rids) AS r(ws, rid),
              LATERAL (SELECT workspace_id, actor_id, labels FROM holds
                       WHERE workspace_id = r.ws AND request_id = r.rid {on("$", "workspace_id")}
                       LIMIT 1) h,
              LATERAL (SELECT 'actor_id', h.actor_id
                       UNION ALL SELECT key, value FROM jsonb_each_text(h.labels)) x(k, v)
              WHERE r.ws = ANY(budgeted)
            UNION ALL
            SELECT h.workspace_id, x.k, x.v FROM holds h,
              LATERAL (SELECT 'actor_id', h.actor_id
                       UNION ALL SELECT key, value FROM jsonb_each_text(h.labels)) x(k, v)
              WHERE h.workspace_id = ANY(sweep) AND h.workspace_id = ANY(budgeted)
                AND h.state = 1 AND h.expires_at <= at {on("$", "h.workspace_id")}
          ) c(ws, key, value)
          JOIN budgets b ON b.workspace_id = c.ws AND b.scope_key = c.key
            AND b.scope_value IN ('', c.value) {on("$", "b.workspace_id")}
          WHERE c.value <> ''
      ) k,
      LATERAL (SELECT * FROM budget_spend WHERE workspace_id = k.ws AND budget_id = k.bid
               AND scope_value = k.value {on("$", "workspace_id")} LIMIT 1) s;
  END IF;"""


def load() -> str:
    """0009's meter_load, with budgets in place of member limits and the runway's columns."""
    text: str = _0009["LOAD"]
    for p in ("", "AND $ = ANY(locked)"):
        reads = _0009["_reads"](p)
        start = reads.index("  IF limited IS NOT NULL THEN")
        end = reads.index("  IF topped IS NOT NULL THEN")
        text = text.replace(
            reads, reads[:start] + _spend_reads(p).lstrip("\n") + "\n" + reads[end:]
        )
    text = text.replace(_0009["_row"]("w", _0009["WORKSPACE"]), _0009["_row"]("w", WORKSPACE))
    text = text.replace("FILTER (WHERE w.member_limits)", "FILTER (WHERE w.budgets)")
    text = text.replace(
        "INTO locked, workspaces, limited, topped", "INTO locked, workspaces, budgeted, topped"
    )
    text = text.replace("  limited text[];\n", "  budgeted text[];\n  budget_rows json;\n")
    text = text.replace("  limits json;\n", "")
    text = text.replace(
        "skip_locked boolean, actor_ws text[], actor_ids text[],",
        "skip_locked boolean, cand_ws text[], cand_keys text[], cand_values text[],",
    )
    text = text.replace("coalesce(limits, '[]'::json)", "coalesce(budget_rows, '[]'::json)")
    assert "limited" not in text, "0009's meter_load changed shape"
    assert "member" not in text, "0009's meter_load changed shape"
    return text


def upgrade() -> None:
    op.execute(
        """
        CREATE TABLE budgets (
          workspace_id text NOT NULL,
          budget_id text NOT NULL,
          scope_key text NOT NULL,
          scope_value text NOT NULL DEFAULT '',
          period smallint NOT NULL,
          credit_limit bigint NOT NULL,
          warn_at smallint[] NOT NULL DEFAULT '{80}',
          enabled boolean NOT NULL DEFAULT true,
          updated_at timestamptz NOT NULL DEFAULT now(),
          CONSTRAINT pk_budgets PRIMARY KEY (workspace_id, budget_id),
          CONSTRAINT ck_budgets_limit CHECK (credit_limit >= 0)
        );
        CREATE TABLE budget_spend (
          workspace_id text NOT NULL,
          budget_id text NOT NULL,
          scope_value text NOT NULL,
          held bigint NOT NULL DEFAULT 0,
          used bigint NOT NULL DEFAULT 0,
          period_start timestamptz NOT NULL,
          warned smallint NOT NULL DEFAULT 0,
          exceeded boolean NOT NULL DEFAULT false,
          CONSTRAINT pk_budget_spend PRIMARY KEY (workspace_id, budget_id, scope_value)
        );
        INSERT INTO budgets (workspace_id, budget_id, scope_key, scope_value, period,
                             credit_limit, warn_at)
        SELECT workspace_id,
               'member:' || CASE actor_id WHEN '' THEN '*' ELSE actor_id END || ':'
                 || CASE period WHEN 1 THEN 'day' WHEN 2 THEN 'week' ELSE 'month' END,
               'actor_id', actor_id, period, credit_limit, '{}'
          FROM member_limits;
        INSERT INTO budget_spend (workspace_id, budget_id, scope_value, held, used, period_start)
        SELECT b.workspace_id, b.budget_id, h.actor_id,
               coalesce(sum(h.amount) FILTER (WHERE h.state = 1), 0),
               coalesce(sum(h.charged - h.refunded) FILTER (
                 WHERE h.state = 2 AND h.finished_at >= p.start), 0),
               p.start
          FROM budgets b
          CROSS JOIN LATERAL (SELECT date_trunc(CASE b.period WHEN 1 THEN 'day'
                WHEN 2 THEN 'week' ELSE 'month' END, now(), 'UTC') AS start) p
          JOIN holds h ON h.workspace_id = b.workspace_id AND h.actor_id <> ''
            AND b.scope_value IN ('', h.actor_id)
            AND (h.state = 1 OR (h.state = 2 AND h.finished_at >= p.start))
         GROUP BY b.workspace_id, b.budget_id, h.actor_id, p.start;
        DROP TABLE member_limits, member_spend;
        ALTER TABLE workspaces RENAME COLUMN member_limits TO budgets;
        ALTER TABLE workspaces
          ADD COLUMN runway_days smallint NOT NULL DEFAULT 7,
          ADD COLUMN burn bigint[] NOT NULL DEFAULT '{}',
          ADD COLUMN burn_day date,
          ADD COLUMN runway_low boolean NOT NULL DEFAULT false;
        """
    )
    op.execute(f"DROP FUNCTION meter_load({OLD_SIGNATURE})")
    op.execute(load())


def downgrade() -> None:
    raise NotImplementedError("0010 turns member limits into budgets; restore a backup")
