"""The credit policies a Book enforces (DESIGN.md §10): member limits and auto top-up.

Both are state of one workspace, loaded with its book only when the workspace has them, and
checked in the same transaction as the change they govern: racing reserves of one member
meet one running total under the workspace's lock, and a top-up request is written with the
charge that crossed its threshold.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta

from meter.ledger.model import Period, TopUpView

# Auto top-up: failures in a row that disable the rule, and how long a request stays
# outstanding before another may be made.
TOPUP_MAX_FAILURES = 3
TOPUP_LAPSE = timedelta(hours=24)

_DAY = timedelta(days=1)


def period_start(period: Period, at: datetime) -> datetime:
    """The start of the UTC calendar day, week (from Monday) or month that holds `at`."""
    day = at.astimezone(UTC).replace(hour=0, minute=0, second=0, microsecond=0)
    if period is Period.DAY:
        return day
    if period is Period.WEEK:
        return day - day.weekday() * _DAY
    return day.replace(day=1)


def period_end(period: Period, at: datetime) -> datetime:
    start = period_start(period, at)
    if period is Period.DAY:
        return start + _DAY
    if period is Period.WEEK:
        return start + 7 * _DAY
    return (start + 32 * _DAY).replace(day=1)


@dataclass(slots=True)
class Spend:
    """A member's running spend: what its HELD holds hold, and what it was charged in each
    period of `updated_at` (index period - 1)."""

    actor_id: str
    held: int = 0
    used: list[int] = field(default_factory=lambda: [0, 0, 0])
    noticed: int = 0  # bit period - 1: that period's member.limit_reached event was written
    updated_at: datetime | None = None

    def used_at(self, period: Period, now: datetime) -> int:
        """Charged in the period that holds `now` (a later period starts from nothing)."""
        return 0 if self._rolled(period, now) else self.used[period - 1]

    def roll(self, now: datetime) -> None:
        """Move the counters to the periods of `now`."""
        for p in Period:
            if self._rolled(p, now):
                self.used[p - 1] = 0
                self.noticed &= ~(1 << (p - 1))
        self.updated_at = now

    def _rolled(self, period: Period, now: datetime) -> bool:
        """Whether `now` is in a later period than the counters'."""
        return self.updated_at is None or period_start(period, now) > period_start(
            period, self.updated_at
        )


@dataclass(frozen=True, slots=True)
class Breach:
    """A reserve that would take a member past a limit."""

    period: Period
    limit: int
    used: int
    resets_at: datetime

    @property
    def remaining(self) -> int:
        return max(self.limit - self.used, 0)


class Members:
    """A workspace's member limits, and the spend of the members a batch concerns."""

    __slots__ = ("dirty", "limits", "spend")

    def __init__(self, limits: dict[tuple[str, Period], int], spend: dict[str, Spend]) -> None:
        self.limits = limits  # (actor_id, period) -> limit; actor '' is every member's default
        self.spend = spend
        self.dirty: dict[str, Spend] = {}  # to write back

    def limit(self, actor_id: str, period: Period) -> int | None:
        found = self.limits.get((actor_id, period))
        return self.limits.get(("", period)) if found is None else found

    def breach(self, actor_id: str, amount: int, now: datetime) -> Breach | None:
        """The first period whose limit `amount` more would exceed; changes nothing. Nothing
        (a free operation) exceeds no limit, even for a member past it by a late commit."""
        if amount == 0:
            return None
        spend = self.spend.get(actor_id)
        for p in Period:
            limit = self.limit(actor_id, p)
            if limit is None:
                continue
            used = 0 if spend is None else spend.used_at(p, now) + spend.held
            if used + amount > limit:
                return Breach(p, limit, used, period_end(p, now))
        return None

    def notice(self, actor_id: str, period: Period, now: datetime) -> bool:
        """Whether this period's member.limit_reached event is still to write; marks it written."""
        spend = self._current(actor_id, now)
        bit = 1 << (period - 1)
        if spend.noticed & bit:
            return False
        spend.noticed |= bit
        return True

    def hold(self, actor_id: str, delta: int, now: datetime) -> None:
        spend = self._current(actor_id, now)
        spend.held = max(spend.held + delta, 0)

    def charge(self, actor_id: str, amount: int, now: datetime) -> None:
        spend = self._current(actor_id, now)
        for p in Period:
            spend.used[p - 1] += amount

    def refund(
        self, actor_id: str, amount: int, charged_at: datetime | None, now: datetime
    ) -> None:
        """A refund lowers the spend of the periods its charge was counted in, if still current."""
        spend = self._current(actor_id, now)
        for p in Period:
            if charged_at is not None and period_start(p, charged_at) == period_start(p, now):
                spend.used[p - 1] = max(spend.used[p - 1] - amount, 0)

    def _current(self, actor_id: str, now: datetime) -> Spend:
        spend = self.spend.get(actor_id)
        if spend is None:
            spend = self.spend[actor_id] = Spend(actor_id)
        spend.roll(now)
        self.dirty[actor_id] = spend
        return spend


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
    resets_at: datetime


def limit_views(
    workspace_id: str,
    limits: dict[tuple[str, Period], int],
    spend: dict[str, Spend],
    now: datetime,
    actors: list[str] | None = None,
) -> list[MemberLimitView]:
    """The limits that apply to `actors` (default: every limit set, for its own actor)."""
    members = Members(limits, spend)
    views = []
    if actors is None:
        keys = sorted(limits, key=lambda k: (k[0], k[1]))
    else:
        keys = [(a, p) for a in actors for p in Period if members.limit(a, p) is not None]
    for actor_id, period in keys:
        limit = members.limit(actor_id, period)
        s = spend.get(actor_id)
        used = 0 if s is None or not actor_id else s.used_at(period, now) + s.held
        remaining = 0 if limit is None else max(limit - used, 0)
        views.append(
            MemberLimitView(
                workspace_id, actor_id, period, limit, used, remaining, period_end(period, now)
            )
        )
    return views
