"""The credit policies a Book enforces (DESIGN.md §10): auto top-up, and member limits as
callers see them (they are budgets: meter.ledger.budgets).

Both are state of one workspace, loaded with its book only when the workspace has them, and
checked in the same transaction as the change they govern: racing reserves of one member
meet one running total under the workspace's lock, and a top-up request is written with the
charge that crossed its threshold.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta

from meter.ledger.budgets import Budget, Budgets, BudgetSpend, period_end, period_start
from meter.ledger.model import Period, TopUpView

# Auto top-up: failures in a row that disable the rule, and how long a request stays
# outstanding before another may be made.
TOPUP_MAX_FAILURES = 3
TOPUP_LAPSE = timedelta(hours=24)


@dataclass(slots=True)
class TopUp:
    """A workspace's auto top-up rule and where it stands."""

    enabled: bool
    threshold: int
    package: str
    amount: int
    monthly_limit: int
    failures: int = 0  # in a row
    seq: int = 0  # n of the last request id, topup:<workspace>:<n>
    outstanding: str = ""  # the request id waiting for its grant
    requested_at: datetime | None = None
    month_start: datetime | None = None  # the calendar month month_count counts
    month_count: int = 0
    last_failed: str = ""

    def lapse(self, now: datetime) -> None:
        """An outstanding request nobody answered within TOPUP_LAPSE lapses."""
        at = self.requested_at
        if self.outstanding and at is not None and at + TOPUP_LAPSE <= now:
            self.outstanding = ""

    def due(self, available: int, now: datetime) -> bool:
        """Whether a request is to be made now: enabled, below threshold, none outstanding,
        and the month's limit not reached."""
        if not self.enabled or self.outstanding or available >= self.threshold:
            return False
        return self.requested_this_month(now) < self.monthly_limit

    def requested_this_month(self, now: datetime) -> int:
        if self.month_start != period_start(Period.MONTH, now):
            return 0
        return self.month_count

    def request(self, workspace_id: str, now: datetime) -> str:
        month = period_start(Period.MONTH, now)
        self.month_count = self.requested_this_month(now) + 1
        self.month_start = month
        self.seq += 1
        self.outstanding = f"topup:{workspace_id}:{self.seq}"
        self.requested_at = now
        return self.outstanding

    def view(self, workspace_id: str, now: datetime) -> TopUpView:
        """The rule as callers see it at `now` (the book's answer and the policy read's)."""
        return TopUpView(
            workspace_id,
            self.enabled,
            self.threshold,
            self.package,
            self.amount,
            self.monthly_limit,
            self.failures,
            self.outstanding,
            self.requested_at if self.outstanding else None,
            self.requested_this_month(now),
        )


@dataclass(frozen=True, slots=True)
class MemberLimitView:
    """A member limit as callers see it; used and remaining for a named member."""

    workspace_id: str
    actor_id: str
    period: Period
    limit: int | None
    used: int
    remaining: int
    resets_at: datetime | None


def member_limit_views(
    workspace_id: str,
    budgets: Sequence[Budget],
    spend: Mapping[tuple[str, str], BudgetSpend],
    now: datetime,
    actors: Sequence[str] | None = None,
) -> list[MemberLimitView]:
    """The member limits (budgets of the actor_id key): every one set, for its own actor, or
    (with `actors`) the ones that apply to each of them."""
    members = [b for b in budgets if b.member]
    views = []
    if actors is None:
        pairs = [(b.scope_value, b) for b in sorted(members, key=_member_order)]
    else:
        found = Budgets(members, spend)
        pairs = [
            (a, b)
            for a in actors
            for b, _ in sorted(found.applying(a, {}), key=lambda bv: int(bv[0].period))
        ]
    for actor_id, b in pairs:
        used = 0
        s = spend.get((b.budget_id, actor_id)) if actor_id else None
        if s is not None:
            used = s.held + (s.used if s.period == period_start(b.period, now) else 0)
        views.append(
            MemberLimitView(
                workspace_id,
                actor_id,
                b.period,
                b.limit,
                used,
                max(b.limit - used, 0),
                period_end(b.period, now),
            )
        )
    return views


def _member_order(b: Budget) -> tuple[str, int]:
    return (b.scope_value, int(b.period))
