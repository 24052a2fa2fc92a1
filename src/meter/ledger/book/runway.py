"""The runway (DESIGN.md §13): the daily burn a charge or a refund moves, and the notice when
the credits would run out within the workspace's runway_days."""

from __future__ import annotations

from datetime import datetime

from meter.events import types as events
from meter.ledger.book.state import BookState
from meter.ledger.model import Lot
from meter.ledger.runway import WEEK_DAYS, RunwayView, add_burn, burn_total, runway


class RunwayRules(BookState):
    """The burn, the runway and balance.runway_low."""

    __slots__ = ()  # the state's slots are BookState's

    def _burn(self, amount: int) -> None:
        """Credits charged (positive) or refunded (negative) today."""
        if amount:
            a = self.account
            a.burn_day = add_burn(a.burn, a.burn_day, self.now.date(), amount)
            self.account_dirty = True

    def runway(self) -> RunwayView:
        """The runway as the balance shows it."""
        a = self.account
        t = self.topup
        threshold = t.threshold if t is not None and t.enabled else None
        return runway(self._live_lots(), a.burn, a.burn_day, self.now, a.runway_days, threshold)

    def _check_runway(self) -> None:
        """balance.runway_low once when days_left falls below runway_days; re-armed when it is
        back at or above (or there is no burn to tell)."""
        a = self.account
        if not a.runway_days:
            return
        week = burn_total(a.burn, a.burn_day, self.now.date(), WEEK_DAYS)
        if week <= 0:
            low, view = False, None
        # Expiries only shorten the runway: available ÷ (week ÷ 7) bounds it, and is it when
        # no lot expires before then (the common case, without simulating the lots). The
        # bound is compared in integers: a runway of exactly runway_days is not low.
        elif a.available * WEEK_DAYS < a.runway_days * week:
            low, view = True, None
        else:
            bound = a.available * WEEK_DAYS / week
            soonest = a.next_expiry_at
            if soonest is None or (soonest - self.now).total_seconds() / 86_400 >= bound:
                low, view = False, None
            else:
                view = self.runway()
                low = view.days_left is not None and view.days_left < a.runway_days
        if low and not a.runway_low:
            a.runway_low = True
            self.account_dirty = True
            view = view or self.runway()
            self._event(
                events.BALANCE_RUNWAY_LOW,
                runway_days=a.runway_days,
                days_left=round(view.days_left or 0.0, 2),
                burn_per_day=round(view.burn_per_day, 2),
                zero_at=view.zero_at,
            )
        elif not low and a.runway_low:
            a.runway_low = False
            self.account_dirty = True

    def _live_lots(self) -> list[tuple[int, datetime | None]]:
        """(remaining, expires_at) of the spendable, unexpired lots with credits, in burn order."""
        now = self.now
        return [
            (lot.remaining, lot.expires_at)
            for lot in sorted(self.lots.values(), key=Lot.burn_key)
            if lot.remaining and lot.spendable and not lot.expired(now)
        ]
