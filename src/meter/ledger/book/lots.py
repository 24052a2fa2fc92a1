"""Lots' burn order: drawing credits from them and giving them back (BookState adds lots)."""

from __future__ import annotations

from meter.events import types as events
from meter.ledger.book.state import BookState
from meter.ledger.model import Category, EntryKind, Lot


class LotRules(BookState):
    """Lots: drawing from them in burn order, and giving credits back to them."""

    __slots__ = ()  # the state's slots are BookState's

    def _lot_of(self, request_id: str) -> Lot | None:
        """The lot granted under a request id, if the book has it."""
        return next((lt for lt in self.lots.values() if lt.request_id == request_id), None)

    def _category(self, draws: list[list[int]]) -> Category | None:
        """The category of the lots `draws` came from, when they share one."""
        found = {self.lots[lot_id].category for lot_id, _ in draws}
        return found.pop() if len(found) == 1 else None

    def _draw(self, amount: int) -> list[list[int]]:
        """Take `amount` from unexpired lots in burn order; the caller checked it is there."""
        draws: list[list[int]] = []
        left = amount
        if left:
            for lot in sorted(self.lots.values(), key=Lot.burn_key):
                if lot.remaining == 0 or not lot.spendable or lot.expired(self.now):
                    continue
                take = min(left, lot.remaining)
                lot.remaining -= take
                self._lot_changed(lot)
                draws.append([lot.lot_id, take])
                left -= take
                if left == 0:
                    break
        assert left == 0, "drew more than the lots hold"
        return draws

    def _keep(self, draws: list[list[int]], keep: int) -> list[list[int]]:
        """Keep `keep` of a hold's draws (in burn order) and give the rest back to its lots."""
        kept: list[list[int]] = []
        back: list[list[int]] = []
        left = keep
        for lot_id, credits in sorted(draws, key=lambda d: self.lots[d[0]].burn_key()):
            take = min(left, credits)
            left -= take
            if take:
                kept.append([lot_id, take])
            if credits - take:
                back.append([lot_id, credits - take])
        self._give_back(back, "", "")
        return kept

    def _give_back(
        self, draws: list[list[int]], operation: str, request_id: str, *, credit: bool = False
    ) -> None:
        """Return drawn credits to their lots; what lands on an expired lot expires at once.

        `credit` says the credits had left the balance (a refund) rather than being held.
        """
        expired = 0
        for lot_id, credits in draws:
            lot = self.lots[lot_id]
            if lot.expired(self.now):
                expired += credits
            else:
                lot.remaining += credits
                self._lot_changed(lot)
        if expired:
            # Held credits were part of the balance; refunded ones were credited by the refund's
            # own entry. Either way they leave the balance now.
            self.account.balance -= expired
            reason = "refunded to an expired lot" if credit else "returned to an expired lot"
            entry = self._entry(
                EntryKind.EXPIRE,
                -expired,
                operation=operation,
                request_id=request_id,
                reason=reason,
            )
            self._event(
                events.CREDITS_EXPIRED,
                amount=expired,
                entry_id=entry.entry_id,
                request_id=request_id,
                reason=reason,
            )
        self.account_dirty = True
