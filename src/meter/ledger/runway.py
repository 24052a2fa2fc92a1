"""The runway (DESIGN.md §13): how fast a workspace spends, and how long its credits last.

The burn is what was charged less what was refunded, per UTC day, kept on the workspace's
row for the last BURN_DAYS days (the newest first). `burn_per_day` is the last 7 days' burn
(today's so far included) over 7, `burn_per_day_30d` the last 30 days' over 30.

`days_left` spends available credits at `burn_per_day` from now on, in burn order, while the
lots expire: a lot that expires before it is spent takes what is left of it along, so the
credits run out sooner than available ÷ burn. Held credits count as spent (they are not in
available). `zero_at` is when nothing is left; with an enabled auto top-up rule, `topup_at`
is when available would fall below its threshold (a top-up request, if nothing stopped it).
Without burn there is no runway to tell: days_left, zero_at and topup_at are unset.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import date, datetime, timedelta

BURN_DAYS = 31
WEEK_DAYS = 7
MONTH_DAYS = 30
DEFAULT_RUNWAY_DAYS = 7
MAX_RUNWAY_DAYS = 3650
_DAY_S = 86_400.0


def add_burn(burn: list[int], burn_day: date | None, day: date, amount: int) -> date:
    """Add `amount` to `day`'s burn in place (the list's newest day is burn_day); returns
    the newest day after it. Days older than BURN_DAYS are dropped."""
    if burn_day is None or not burn:
        burn[:] = [amount]
        return day
    if day > burn_day:
        gap = (day - burn_day).days
        burn[:0] = [0] * gap
        del burn[BURN_DAYS:]
        burn[0] += amount
        return day
    back = (burn_day - day).days
    if back < BURN_DAYS:
        burn.extend([0] * (back + 1 - len(burn)))
        burn[back] += amount
    return burn_day


def burn_total(burn: Sequence[int], burn_day: date | None, today: date, days: int) -> int:
    """The burn of the `days` days ending today."""
    if burn_day is None:
        return 0
    shift = (today - burn_day).days
    return sum(v for i, v in enumerate(burn) if 0 <= i + shift < days)


def burn_per_day(burn: Sequence[int], burn_day: date | None, today: date, days: int) -> float:
    """The burn of the `days` days ending today, over `days`."""
    return burn_total(burn, burn_day, today, days) / days


@dataclass(frozen=True, slots=True)
class RunwayView:
    burn_per_day: float
    burn_per_day_30d: float
    days_left: float | None
    zero_at: datetime | None
    topup_at: datetime | None
    runway_days: int


@dataclass(slots=True)
class _Lot:
    remaining: float
    expires_at: datetime | None


def runway(
    lots: Sequence[tuple[int, datetime | None]],
    burn: Sequence[int],
    burn_day: date | None,
    now: datetime,
    runway_days: int,
    topup_threshold: int | None = None,
) -> RunwayView:
    """The runway of credits in `lots` ((remaining, expires_at) in burn order, spendable and
    unexpired: they sum to available)."""
    today = now.date()
    week = burn_per_day(burn, burn_day, today, WEEK_DAYS)
    month = burn_per_day(burn, burn_day, today, MONTH_DAYS)
    if week <= 0:
        return RunwayView(week, month, None, None, None, runway_days)
    zero_at, topup_at = _spend(lots, week / _DAY_S, now, topup_threshold)
    days_left = (zero_at - now).total_seconds() / _DAY_S
    return RunwayView(week, month, days_left, zero_at, topup_at, runway_days)


def _spend(
    lots: Sequence[tuple[int, datetime | None]],
    rate: float,
    now: datetime,
    threshold: int | None,
) -> tuple[datetime, datetime | None]:
    """When spending at `rate` credits a second, in burn order while lots expire, leaves
    nothing; and when it leaves less than `threshold`."""
    left = [_Lot(float(r), e) for r, e in lots if r > 0]
    total = sum(lt.remaining for lt in left)
    t = now
    topup_at: datetime | None = None
    if threshold is not None and total < threshold:
        topup_at = now
    while left:
        first = left[0]
        expiries = [lt.expires_at for lt in left if lt.expires_at is not None]
        until_spent = first.remaining / rate
        until_expiry = min(((e - t).total_seconds() for e in expiries), default=None)
        step = until_spent if until_expiry is None else min(until_spent, until_expiry)
        step = max(step, 0.0)
        spent = min(step * rate, first.remaining)
        if threshold is not None and topup_at is None and total - spent < threshold:
            topup_at = t + timedelta(seconds=(total - threshold) / rate)
        first.remaining -= spent
        total -= spent
        t += timedelta(seconds=step)
        kept = []
        for lt in left:
            if lt.remaining <= 1e-9:
                continue
            if lt.expires_at is not None and lt.expires_at <= t:
                total -= lt.remaining
                if threshold is not None and topup_at is None and total < threshold:
                    topup_at = t
                continue
            kept.append(lt)
        left = kept
    return t, topup_at
