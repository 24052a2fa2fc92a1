"""Which workspaces have overdue holds, lots or expiry notices: the sweeper's worklist."""

from __future__ import annotations

from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine

from meter.storage.db import translating

_DUE = text(
    "(SELECT DISTINCT workspace_id FROM holds WHERE state = 1 AND expires_at <= now()"
    "  ORDER BY 1 LIMIT :n)"
    " UNION (SELECT workspace_id FROM workspaces WHERE next_expiry_at <= now() ORDER BY 1 LIMIT :n)"
    # Lots whose credits.expiring event is due (DESIGN.md §9).
    " UNION (SELECT workspace_id FROM workspaces WHERE next_notice_at <= now() ORDER BY 1 LIMIT :n)"
)


class SweepQueries:
    def __init__(self, engine: AsyncEngine) -> None:
        self.engine = engine

    @translating
    async def due(self, limit: int) -> list[str]:
        async with self.engine.connect() as conn:
            return list((await conn.execute(_DUE, {"n": limit})).scalars())
