"""ExportJournal's reads: every workspace's journal in (created_at, workspace_id, entry_id) order.

An entry becomes visible when its batch commits, and its created_at is its batch's start
(the ledger's time when meter_load ran): so an entry may appear after entries created later
than it. A reader that resumed after the last key it saw would then skip it. The feed
therefore answers only entries created before a horizon, the ledger's time less a lag longer
than any ledger transaction can last (statement_timeout and
idle_in_transaction_session_timeout bound them: meter.storage.db), and every entry created
before the horizon has committed or rolled back by then. Pages are keyset ranges on
ix_journal_created (migration 0011).

The horizon is read first, on its own, so that the page's statement holds no function: on
Citus it is a multi-shard ORDER BY ... LIMIT over the distributed journal, with every value a
parameter.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine

from meter.ledger.clock import Clock
from meter.ledger.model import Entry
from meter.storage.db import Repository, reading
from meter.storage.ledger_rows import entry as entry_of
from meter.storage.tables import journal

# The key after which a page continues: (created_at, workspace_id, entry_id).
Key = tuple[datetime, str, int]

_COLUMNS = ", ".join(c.name for c in journal.columns)
_FIRST = f"SELECT {_COLUMNS} FROM journal WHERE created_at < :horizon"
_AFTER = f"{_FIRST} AND (created_at, workspace_id, entry_id) > (:t, :w, :e)"
_SINCE = " AND created_at >= :start"
_ORDER = " ORDER BY created_at, workspace_id, entry_id LIMIT :n"
# Which database this is, as tokens remember it: the cluster's system identifier (the same
# on its physical standbys, so a failover keeps it) and the database's oid in the cluster.
_IDENTITY = (
    "SELECT (SELECT system_identifier FROM pg_control_system())::text || '/' ||"
    " (SELECT oid FROM pg_database WHERE datname = current_database())::text"
)


@dataclass(frozen=True, slots=True)
class ExportPage:
    entries: list[tuple[str, Entry]]  # (workspace_id, entry)
    horizon: datetime


class JournalExport(Repository):
    """What ExportJournal reads."""

    def __init__(self, engine: AsyncEngine, clock: Clock | None = None) -> None:
        super().__init__(engine)
        self.clock = clock or Clock()
        self._identity: str | None = None

    @reading
    async def page(
        self, after: Key | None, start: datetime | None, limit: int, lag_s: float
    ) -> ExportPage:
        """Up to `limit` entries after `after` (from the oldest when None), created at or
        after `start` and before the horizon (the ledger's time less `lag_s`)."""
        sql = (_AFTER if after else _FIRST) + (_SINCE if start else "") + _ORDER
        async with self.autocommit.connect() as conn:
            horizon = (
                await conn.execute(
                    text(f"SELECT {self.clock.sql()} - make_interval(secs => :lag)"),
                    {"lag": lag_s},
                )
            ).scalar_one()
            params: dict[str, object] = {"horizon": horizon, "n": limit}
            if start is not None:
                params["start"] = start
            if after is not None:
                params.update(t=after[0], w=after[1], e=after[2])
            rows = (await conn.execute(text(sql), params)).all()
        return ExportPage([(r.workspace_id, entry_of(r)) for r in rows], horizon)

    @reading
    async def identity(self) -> str:
        """A short digest naming this database (page tokens carry it): another database's
        tokens are refused rather than read as positions in this one."""
        if self._identity is None:
            raw = (await self.fetch_all(text(_IDENTITY)))[0][0]
            self._identity = hashlib.blake2b(str(raw).encode(), digest_size=6).hexdigest()
        return self._identity
