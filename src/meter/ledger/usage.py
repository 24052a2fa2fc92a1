"""Usage reports: credits used and operations counted, grouped for the Billing page.

Credits used are charges less refunds. A refund counts where it happened in time (its day or
week) but against the operation and the actor of the charge it gives back, so "who consumed
credits" nets out refunds made by support staff. Counts are charges only. Days and weeks are
UTC; weeks start on Monday (ISO 8601).
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime
from enum import IntEnum


class UsageGrouping(IntEnum):
    """Values equal the proto enum numbers."""

    OPERATION = 1
    ACTOR = 2
    DAY = 3
    WEEK = 4
    LABEL = 5


@dataclass(frozen=True, slots=True)
class UsageRow:
    """One group: `key` for operations and actors, `period_start` for days and weeks.
    `held`: by actor, what the member's open holds hold now (whatever the range)."""

    key: str
    period_start: datetime | None
    credits: int
    count: int
    held: int = 0


@dataclass(frozen=True, slots=True)
class UsageReport:
    rows: tuple[UsageRow, ...]

    @property
    def total_credits(self) -> int:
        return sum(r.credits for r in self.rows)

    @property
    def total_count(self) -> int:
        return sum(r.count for r in self.rows)

    def with_keys(self, keys: Iterable[str]) -> UsageReport:
        """The report with an empty row for each key it has no row for (a member who has a
        limit but no charge in the range), after the rows it has, in key order."""
        have = {r.key for r in self.rows}
        extra = sorted(set(keys) - have)
        return UsageReport(self.rows + tuple(UsageRow(k, None, 0, 0) for k in extra))
