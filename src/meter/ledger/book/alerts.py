"""Balance alerts: the thresholds, and the alerts and events a change of available fires."""

from __future__ import annotations

from meter.events import types as events
from meter.ledger.book.state import BookState
from meter.ledger.commands import SetThresholdsCmd
from meter.ledger.model import AlertKind, BalanceView, Level, level_of


class AlertRules(BookState):
    """Alert thresholds, and what a change of the available balance fires."""

    __slots__ = ()  # the state's slots are BookState's

    def _touch(self) -> None:
        """Note an account change and fire the alerts its available balance now calls for."""
        self.account_dirty = True
        a = self.account
        level = level_of(a.available, a.low_threshold, a.critical_threshold)
        if level > a.alert_level:
            if a.alert_level < Level.LOW <= level:
                self._alert(AlertKind.LOW, a.low_threshold)
            if level is Level.CRITICAL:
                self._alert(AlertKind.CRITICAL, a.critical_threshold)
        elif level is Level.OK and a.alert_level is not Level.OK and a.lifetime_used:
            # Back above the low threshold; a workspace that never spent has not recovered.
            self._event(events.BALANCE_RECOVERED, threshold=a.low_threshold)
        a.alert_level = level
        if a.available == 0 < self.seen_available:
            self.seen_available = 0
            self._event(events.BALANCE_DEPLETED)
        self.seen_available = a.available
        if self.topup is not None:
            self._top_up()

    def set_thresholds(self, cmd: SetThresholdsCmd) -> BalanceView:
        """Set the alert thresholds; the level is re-evaluated without firing an alert.

        Moving a threshold over the balance is a setting, not a crossing: the new level shows
        at once on the balance, and alerts fire on the next downward crossing after the
        balance has risen above the threshold again (or at once for a worse level reached by
        spending).
        """
        a = self.account
        a.low_threshold, a.critical_threshold = cmd.low, cmd.critical
        a.alert_level = level_of(a.available, a.low_threshold, a.critical_threshold)
        self.account_dirty = True
        return self.balance()
