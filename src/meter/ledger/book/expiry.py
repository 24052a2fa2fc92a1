"""Expiry: holds and lots past their time, and the credits.expiring notices before it."""

from __future__ import annotations

from datetime import datetime, timedelta

from meter.events import types as events
from meter.ledger.book.state import BookState
from meter.ledger.model import (
    EXPIRING_NOTICE_DAYS,
    EntryKind,
    HoldState,
    Lot,
    SweepOutcome,
)

NOTICE_WINDOW = timedelta(days=EXPIRING_NOTICE_DAYS)


class ExpiryRules(BookState):
    """Expiring holds and lots, and noticing lots about to expire."""

    __slots__ = ()  # the state's slots are BookState's

    def settle_due(self) -> None:
        """What is due on loading: expire lots past their expiry, send due expiring notices."""
        a = self.account
        if a.next_expiry_at is not None and a.next_expiry_at <= self.now:
            self.expire_lots()
        if a.next_notice_at is not None and a.next_notice_at <= self.now:
            self.account_dirty = True  # finish() writes the notices

    def finish(self) -> None:
        """Settle derived account state before storage writes the book back: the next lot
        expiry, and the credits.expiring events of lots now inside the notice window."""
        if self.account_dirty or self.dirty_lots or self.new_lots:
            a = self.account
            expiry: datetime | None = None
            notice: datetime | None = None
            for lot in sorted(self.lots.values(), key=lambda lt: lt.lot_id):
                at = lot.expires_at
                if lot.remaining == 0 or at is None or not lot.spendable:
                    continue
                if expiry is None or at < expiry:
                    expiry = at
                if lot.expiring_noticed:
                    continue
                if at - NOTICE_WINDOW <= self.now < at:
                    lot.expiring_noticed = True
                    self._revise(lot)
                    self._event(events.CREDITS_EXPIRING, lot=events.lot(lot))
                elif notice is None or at < notice:
                    notice = at
            a.next_expiry_at = expiry
            a.next_notice_at = None if notice is None else notice - NOTICE_WINDOW
            self.account_dirty = True
            self._settle_events()

    def sweep(self) -> SweepOutcome:
        """Expire every overdue hold and lot this book holds."""
        before = sum(-e.amount for e in self.entries if e.kind is EntryKind.EXPIRE)
        holds = 0
        for hold in sorted(self.holds.values(), key=lambda h: h.hold_id):
            if hold.state is HoldState.HELD and hold.expires_at <= self.now:
                self._expire_hold(hold)
                holds += 1
        self.expire_lots()
        after = sum(-e.amount for e in self.entries if e.kind is EntryKind.EXPIRE)
        return SweepOutcome(holds, after - before)

    def expire_lots(self) -> None:
        """Write an EXPIRE entry for every lot past its expiry that still has credits."""
        for lot in sorted(self.lots.values(), key=Lot.burn_key):
            if lot.remaining > 0 and lot.spendable and lot.expired(self.now):
                amount = lot.remaining
                lot.remaining = 0
                self._lot_changed(lot)
                self.account.balance -= amount
                entry = self._entry(
                    EntryKind.EXPIRE,
                    -amount,
                    reason=f"lot {lot.lot_id} expired",
                    category=lot.category,
                )
                self._event(
                    events.CREDITS_EXPIRED,
                    amount=amount,
                    lot=events.lot(lot),
                    entry_id=entry.entry_id,
                    reason="lot expired",
                )
