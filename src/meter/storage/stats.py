"""Figures for operators' metrics, read from the ledger's tables."""

from __future__ import annotations

from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine

from meter.storage.db import translating

# The partial index on HELD holds (the sweeper's) keeps this cheap however large holds grows.
_HELD = text("SELECT count(*), coalesce(sum(amount), 0) FROM holds WHERE state = 1")


@translating
async def holds_held(engine: AsyncEngine) -> tuple[int, int]:
    """How many holds are HELD across all workspaces, and the credits they set aside."""
    async with engine.connect() as conn:
        row = (await conn.execute(_HELD)).one()
    return int(row[0]), int(row[1])
