"""Corrections after the fact: an administrator's adjustments and refunds of charges."""

from __future__ import annotations

from meter import errors
from meter.events import types as events
from meter.ledger.book.state import BookState
from meter.ledger.commands import AdjustCmd, RefundCmd
from meter.ledger.model import Category, EntryKind, EntryOutcome, HoldState


class CorrectionRules(BookState):
    """Adjustments and refunds."""

    __slots__ = ()  # the state's slots are BookState's

    def adjust(self, cmd: AdjustCmd) -> EntryOutcome:
        """An administrator's correction; a negative one never takes available below zero.

        Raises:
            MeterError: REQUEST_ID_REUSED, INSUFFICIENT_CREDITS.
        """
        replay = self._entry_replay(cmd.request_id, cmd.fingerprint)
        if replay is not None:
            return EntryOutcome(replay, self.balance())
        if cmd.amount > 0:
            self._new_lot(cmd.request_id, cmd.amount, None, "adjustment", "", Category.MANUAL)
        else:
            self._require_available(-cmd.amount, "", cmd.request_id, "", alert=False)
            self._draw(-cmd.amount)
            self.account.balance += cmd.amount
        self._event(
            events.CREDITS_ADJUSTED,
            amount=cmd.amount,
            reason=cmd.reason,
            entry_id=self.account.entry_seq + 1,
            request_id=cmd.request_id,
            actor_id=cmd.actor_id,
        )
        entry = self._entry(
            EntryKind.ADJUST,
            cmd.amount,
            actor_id=cmd.actor_id,
            request_id=cmd.request_id,
            reason=cmd.reason,
            fingerprint=cmd.fingerprint,
        )
        return EntryOutcome(entry, self.balance())

    def refund(self, cmd: RefundCmd) -> EntryOutcome:
        """Give back part or all of a committed charge, to the lots it came from.

        Raises:
            MeterError: REQUEST_ID_REUSED, HOLD_NOT_FOUND, NOT_COMMITTED, REFUND_EXCEEDS_CHARGE.
        """
        replay = self._entry_replay(cmd.request_id, cmd.fingerprint)
        if replay is not None:
            return EntryOutcome(replay, self.balance())
        hold = self._hold(cmd.charge_request_id)
        if hold.state is not HoldState.COMMITTED:
            raise errors.precondition(
                "NOT_COMMITTED",
                f"{cmd.charge_request_id!r} has not been charged ({hold.state.name.lower()})",
                request_id=cmd.charge_request_id,
            )
        refundable = hold.charged - hold.refunded
        amount = cmd.amount or refundable
        if amount <= 0 or amount > refundable:
            raise errors.precondition(
                "REFUND_EXCEEDS_CHARGE",
                f"{cmd.charge_request_id!r} charged {hold.charged} and {hold.refunded} of it was "
                f"refunded already; {amount} more cannot be refunded",
                charged=str(hold.charged),
                refunded=str(hold.refunded),
                refundable=str(refundable),
            )
        # Give back from the lots that burn last first, so what stays charged is what burns first.
        back: list[list[int]] = []
        left = amount
        for draw in sorted(hold.draws, key=lambda d: self.lots[d[0]].burn_key(), reverse=True):
            if left == 0:
                break
            take = min(left, draw[1])
            if take:
                back.append([draw[0], take])
                draw[1] -= take
                left -= take
        hold.draws = [d for d in hold.draws if d[1] > 0]
        hold.refunded += amount
        self._dirty(hold)
        if self.budgets is not None:
            self.budgets.refund(hold.actor_id, hold.labels, amount, hold.finished_at, self.now)
        self.account.lifetime_used -= amount
        self.account.balance += amount
        self._burn(-amount)
        self._event(
            events.CREDITS_REFUNDED,
            amount=amount,
            charge_request_id=cmd.charge_request_id,
            operation=hold.operation,
            refunded_total=hold.refunded,
            reason=cmd.reason,
            entry_id=self.account.entry_seq + 1,
            request_id=cmd.request_id,
            actor_id=cmd.actor_id,
        )
        entry = self._entry(
            EntryKind.REFUND,
            amount,
            operation=hold.operation,
            actor_id=cmd.actor_id,
            request_id=cmd.request_id,
            reason=cmd.reason,
            fingerprint=cmd.fingerprint,
            labels={"charge_request_id": cmd.charge_request_id},
            category=self._category(back),
        )
        self._give_back(back, hold.operation, cmd.request_id, credit=True)
        return EntryOutcome(entry, self.balance())
