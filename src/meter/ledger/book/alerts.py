"""Balance notices: the thresholds, and what a command's change of available fires.

Notices are decided once per command, from the available balance before and after it
(`settle`), never from the steps inside one: a Commit first gives its hold back and then
charges, and a Refund credits and then expires what lands on an expired lot, and none of
those passing states is the user's. So each threshold fires once per crossing however the
change arrives (unary, Stream, a later batch, another replica, the sweeper):

* `balance.low` / `balance.critical` (and their alerts) when available goes from at or
  above the threshold to below it;
* `balance.depleted` when it goes from above 0 to 0;
* `balance.recovered` when it is back at or above the low threshold after a low or critical
  notice of the same dip (`Account.alert_level` remembers the worst notice of the dip);
* a top-up request when it changed and the auto top-up rule is due (book/topup.py);
* `balance.runway_low` when the credits would now run out within runway_days (runway.py).

Every event a command writes carries the balance after the command.
"""

from __future__ import annotations

from meter.events import types as events
from meter.ledger.book.state import BookState
from meter.ledger.commands import SetThresholdsCmd
from meter.ledger.model import AlertKind, BalanceView, Level


class AlertRules(BookState):
    """Alert thresholds, and the notices a command's change of the available balance fires."""

    __slots__ = ()  # the state's slots are BookState's

    def settle(self) -> None:
        """End a command: write the notices its change of available calls for, and give its
        events the balance after it. Storage calls it after every command, refused or not
        (a refusal changes nothing but its own events), and after what loading settles."""
        a = self.account
        self._settle_budgets()
        before, after = self.seen_available, a.available
        if after != before:
            low, critical = a.low_threshold, a.critical_threshold
            if before >= low > after:
                self._alert(AlertKind.LOW, low)
                a.alert_level = max(a.alert_level, Level.LOW)
            if before >= critical > after:
                self._alert(AlertKind.CRITICAL, critical)
                a.alert_level = Level.CRITICAL
            if after == 0:
                self._event(events.BALANCE_DEPLETED)
            self._rearm()
            self.seen_available = after
            self.account_dirty = True
            if self.topup is not None:
                self._top_up()
            self._check_runway()
        self._settle_events()

    def _rearm(self) -> None:
        """Re-arm the thresholds available is back at or above; a dip that was notified ends
        with balance.recovered."""
        a = self.account
        if a.available >= a.low_threshold:
            if a.alert_level is not Level.OK:
                a.alert_level = Level.OK
                self._event(events.BALANCE_RECOVERED, threshold=a.low_threshold)
        elif a.available >= a.critical_threshold and a.alert_level is Level.CRITICAL:
            a.alert_level = Level.LOW

    def set_thresholds(self, cmd: SetThresholdsCmd) -> BalanceView:
        """Set the alert thresholds. Moving a threshold over the balance is a setting, not a
        crossing: the new level shows at once on the balance, and a threshold now below
        available is armed again (silently) for its next downward crossing."""
        a = self.account
        a.low_threshold, a.critical_threshold = cmd.low, cmd.critical
        if cmd.runway_days is not None:
            a.runway_days = cmd.runway_days
            a.runway_low = False  # the new threshold is armed
        if a.available >= a.low_threshold:
            a.alert_level = Level.OK
        elif a.available >= a.critical_threshold and a.alert_level is Level.CRITICAL:
            a.alert_level = Level.LOW
        self.account_dirty = True
        return self.balance()
