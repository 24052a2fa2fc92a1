"""The audit: every workspace's balances recomputed from its journal, lots and holds.

An operator's check, apart from the reads that serve the ledger's callers: one statement
checks a page of workspaces at REPEATABLE READ, so that its figures all come from one
snapshot, and every disagreement it finds is reported as a Discrepancy.
"""

from __future__ import annotations

from collections.abc import Sequence

from sqlalchemy import select, text
from sqlalchemy.ext.asyncio import AsyncEngine

from meter.ledger.model import Discrepancy
from meter.storage.db import reading
from meter.storage.tables import workspaces


class AuditQueries:
    """What the Audit call reads: the workspaces, page by page, and each page's checks."""

    def __init__(self, engine: AsyncEngine) -> None:
        self.engine = engine

    @reading
    async def workspace_ids(self, after: str, limit: int) -> list[str]:
        q = (
            select(workspaces.c.workspace_id)
            .where(workspaces.c.workspace_id > after)
            .order_by(workspaces.c.workspace_id)
            .limit(limit)
        )
        async with self.engine.connect() as conn:
            return list((await conn.execute(q)).scalars())

    @reading
    async def audit(self, workspace_ids: Sequence[str]) -> tuple[int, list[Discrepancy]]:
        """Recompute balances from the journal, lots and holds; report every disagreement.

        Checks, per workspace: the journal sums to the balance and its balance_after chain is
        unbroken; lots' remaining credits equal the available balance; HELD holds sum to held
        and their draws to their amounts; no lot gives out more than it had; lifetime totals
        match the journal; no request id was charged twice; nothing is negative; with budgets,
        each budget's running held total for a value is the value's HELD holds'.
        """
        found: list[Discrepancy] = []
        async with self.engine.connect() as conn:
            await conn.execute(text("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ"))
            rows = (await conn.execute(_AUDIT, {"ids": list(workspace_ids)})).all()
            for r in rows:
                w = r.workspace_id

                def check(name: str, subject: str, expected: int, actual: int, detail: str) -> None:
                    if expected != actual:
                        found.append(Discrepancy(w, name, subject, expected, actual, detail))  # noqa: B023

                check(
                    "balance_vs_journal",
                    "balance",
                    r.journal_sum,
                    r.balance,
                    "the journal's entries do not sum to the balance",
                )
                check(
                    "balance_vs_last_entry",
                    "balance",
                    r.last_balance_after,
                    r.balance,
                    "the newest entry's balance_after is not the balance",
                )
                check(
                    "journal_chain",
                    "journal",
                    0,
                    r.broken_links,
                    "entries whose balance_after is not the previous one's plus their amount",
                )
                check(
                    "lots_vs_available",
                    "available",
                    r.lots_remaining,
                    r.balance - r.held,
                    "lots' remaining credits are not the available balance",
                )
                check(
                    "held_vs_holds", "held", r.holds_held, r.held, "HELD holds do not sum to held"
                )
                check(
                    "hold_draws",
                    "holds",
                    0,
                    r.bad_draws,
                    "holds whose lot draws do not add up to what they hold or charged",
                )
                check(
                    "lot_overdrawn",
                    "lots",
                    0,
                    r.overdrawn_lots,
                    "lots that gave out more credits than they had",
                )
                check(
                    "lifetime_granted",
                    "lifetime_granted",
                    r.granted,
                    r.lifetime_granted,
                    "GRANT entries do not sum to lifetime_granted",
                )
                check(
                    "lifetime_used",
                    "lifetime_used",
                    r.used,
                    r.lifetime_used,
                    "CHARGE less REFUND entries do not sum to lifetime_used",
                )
                check(
                    "double_charge",
                    "request_id",
                    0,
                    r.double_charges,
                    "request ids with more than one CHARGE entry",
                )
                check("negative", "amounts", 0, r.negatives, "negative balances, holds or lots")
                check(
                    "budget_spend",
                    "budget_spend",
                    0,
                    r.bad_spend,
                    "budget values whose running total of held credits is not their HELD holds'",
                )
        return len(rows), found


_AUDIT = text(
    """
SELECT w.workspace_id, w.balance, w.held, w.lifetime_used, w.lifetime_granted,
  coalesce(j.total, 0)::bigint AS journal_sum,
  coalesce(j.granted, 0)::bigint AS granted,
  coalesce(j.used, 0)::bigint AS used,
  coalesce(j.last_balance_after, 0)::bigint AS last_balance_after,
  coalesce(j.broken_links, 0)::bigint AS broken_links,
  coalesce(j.double_charges, 0)::bigint AS double_charges,
  coalesce(l.remaining, 0)::bigint AS lots_remaining,
  coalesce(l.overdrawn, 0)::bigint AS overdrawn_lots,
  coalesce(h.held, 0)::bigint AS holds_held,
  coalesce(h.bad_draws, 0)::bigint AS bad_draws,
  coalesce(s.bad_spend, 0)::bigint AS bad_spend,
  (CASE WHEN w.balance < 0 OR w.held < 0 OR w.balance < w.held THEN 1 ELSE 0 END)
    + coalesce(l.negative, 0)::bigint AS negatives
FROM workspaces w
LEFT JOIN LATERAL (
  SELECT sum(amount) AS total,
    sum(amount) FILTER (WHERE kind = 1) AS granted,
    coalesce(-sum(amount) FILTER (WHERE kind = 2), 0)
      - coalesce(sum(amount) FILTER (WHERE kind = 5), 0) AS used,
    (array_agg(balance_after ORDER BY entry_id DESC))[1] AS last_balance_after,
    count(*) FILTER (WHERE prev IS NOT NULL AND balance_after <> prev + amount
                     OR prev IS NULL AND balance_after <> amount) AS broken_links,
    (SELECT count(*) FROM (SELECT 1 FROM journal d WHERE d.workspace_id = w.workspace_id
       AND d.kind = 2 GROUP BY d.request_id HAVING count(*) > 1) x) AS double_charges
  FROM (SELECT *, lag(balance_after) OVER (ORDER BY entry_id) AS prev
        FROM journal WHERE workspace_id = w.workspace_id) jj
) j ON true
LEFT JOIN LATERAL (
  SELECT sum(remaining) FILTER (WHERE state <> 1) AS remaining,  -- pending lots are not spendable
    count(*) FILTER (WHERE remaining < 0 OR remaining > amount) AS negative,
    count(*) FILTER (WHERE coalesce(d.drawn, 0) > amount - remaining) AS overdrawn
  FROM lots lo
  LEFT JOIN LATERAL (
    SELECT sum(x.credits) AS drawn
    FROM holds hh, unnest(hh.draw_lots, hh.draw_amounts) AS x(lot_id, credits)
    WHERE hh.workspace_id = lo.workspace_id AND x.lot_id = lo.lot_id
      AND hh.state IN (1, 2)
  ) d ON true
  WHERE lo.workspace_id = w.workspace_id
) l ON true
LEFT JOIN LATERAL (
  SELECT sum(amount) FILTER (WHERE state = 1) AS held,
    count(*) FILTER (WHERE
      (state = 1 AND amount <> (SELECT coalesce(sum(a), 0) FROM unnest(draw_amounts) a))
      OR (state = 2
          AND charged - refunded <> (SELECT coalesce(sum(a), 0) FROM unnest(draw_amounts) a))
    ) AS bad_draws
  FROM holds WHERE workspace_id = w.workspace_id
) h ON true
LEFT JOIN LATERAL (
  -- With budgets: each budget's running total of held credits for a value is the HELD
  -- holds' of that value of its scope.
  SELECT count(*) AS bad_spend
  FROM budget_spend bs JOIN budgets b USING (workspace_id, budget_id)
  WHERE w.budgets AND bs.workspace_id = w.workspace_id
    AND bs.held <> (SELECT coalesce(sum(hh.amount), 0) FROM holds hh
                    WHERE hh.workspace_id = bs.workspace_id AND hh.state = 1
                      AND CASE WHEN b.scope_key = 'actor_id' THEN hh.actor_id
                               ELSE hh.labels->>b.scope_key END = bs.scope_value)
) s ON true
WHERE w.workspace_id = ANY(:ids)
ORDER BY w.workspace_id
"""
)
