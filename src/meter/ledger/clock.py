"""The ledger's clock: PostgreSQL's now(), read with each batch, so every replica agrees.

`offset` shifts it, and `pinned` stops it at one instant. Tests move it across a day, week
or month to watch member limits reset, top-up months turn and holds and lots expire, and the
model-based test (tests/promises) pins it so that the ledger's time is exactly the model's;
nothing else sets either. Every decision the ledger
takes by time, in Python or in SQL, reads this clock: SQL takes `sql()` in place of now().
"""

from __future__ import annotations

from datetime import datetime, timedelta


class Clock:
    __slots__ = ("offset", "pinned")

    def __init__(self) -> None:
        self.offset = timedelta(0)
        self.pinned: datetime | None = None

    def at(self, db_now: datetime) -> datetime:
        """The ledger's time when the database says `db_now`."""
        if self.pinned is not None:
            return self.pinned
        return db_now + self.offset if self.offset else db_now

    def sql(self) -> str:
        """The ledger's time as an SQL expression."""
        if self.pinned is not None:
            return f"'{self.pinned.isoformat()}'::timestamptz"
        if not self.offset:
            return "now()"
        return f"(now() + interval '{self.offset.total_seconds():.6f} seconds')"
