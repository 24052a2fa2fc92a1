"""Which workspaces have overdue holds, lots or expiry notices: the sweeper's worklist."""

from __future__ import annotations

from sqlalchemy import TextClause, text
from sqlalchemy.ext.asyncio import AsyncEngine

from meter.ledger.clock import Clock
from meter.storage.db import translating


def _due(now: str) -> TextClause:
    """The workspaces due at the ledger's time `now` (an SQL expression)."""
    return text(
        f"(SELECT DISTINCT workspace_id FROM holds WHERE state = 1 AND expires_at <= {now}"
        "  ORDER BY 1 LIMIT :n)"
        f" UNION (SELECT workspace_id FROM workspaces WHERE next_expiry_at <= {now}"
        "  ORDER BY 1 LIMIT :n)"
        # Lots whose credits.expiring event is due (DESIGN.md §9).
        f" UNION (SELECT workspace_id FROM workspaces WHERE next_notice_at <= {now}"
        "  ORDER BY 1 LIMIT :n)"
    )


class SweepQueries:
    def __init__(self, engine: AsyncEngine, clock: Clock) -> None:
        self.engine = engine
        self.clock = clock

    @translating
    async def due(self, limit: int) -> list[str]:
        async with self.engine.connect() as conn:
            return list((await conn.execute(_due(self.clock.sql()), {"n": limit})).scalars())
