"""Grants: new lots of credits, and pending grants confirmed or voided later (DESIGN.md §10)."""

from __future__ import annotations

from meter import errors
from meter.events import types as events
from meter.ledger.book.state import BookState
from meter.ledger.commands import ConfirmGrantCmd, GrantCmd, VoidGrantCmd
from meter.ledger.model import EntryKind, EntryOutcome, Lot, LotState

# What a grant confirmed or voided answers an attempt to settle it the other way.
_SETTLED = {
    LotState.CONFIRMED: ("GRANT_CONFIRMED", "confirmed; it cannot be voided (refund or adjust)"),
    LotState.VOIDED: ("GRANT_VOIDED", "voided; it cannot be confirmed"),
}


class GrantRules(BookState):
    """Grants, and pending grants' confirmation or voiding."""

    __slots__ = ()  # the state's slots are BookState's

    def grant(self, cmd: GrantCmd) -> EntryOutcome:
        """Add a lot of credits.

        Raises:
            MeterError: REQUEST_ID_REUSED.
        """
        replay = self._entry_replay(cmd.request_id, cmd.fingerprint, grant=True)
        granted = self._lot_of(cmd.request_id)
        if replay is not None:
            return EntryOutcome(replay, self.balance(), granted)
        if granted is not None:
            # A pending grant (or a voided one) has a lot and no entry yet.
            if granted.fingerprint != cmd.fingerprint:
                raise errors.request_id_reused(cmd.request_id)
            return EntryOutcome(None, self.balance(), granted)
        state = LotState.PENDING if cmd.pending else LotState.ACTIVE
        expires_at = cmd.expires_at
        if expires_at is None and cmd.expires_in is not None:
            expires_at = self.now + cmd.expires_in
        lot = self._new_lot(
            cmd.request_id,
            cmd.amount,
            expires_at,
            cmd.source,
            cmd.package,
            cmd.category,
            cmd.priority,
            state,
            cmd.fingerprint if cmd.pending else "",
        )
        topup = self.topup
        if topup is not None and topup.outstanding == cmd.request_id:
            # The payment handler's grant for a top-up request resolves it.
            topup.outstanding, topup.failures = "", 0
            self.topup_dirty = True
        if cmd.pending:
            self._event(
                events.GRANT_PENDING,
                amount=cmd.amount,
                lot=events.lot(lot),
                request_id=cmd.request_id,
                actor_id=cmd.actor_id,
                labels=dict(cmd.labels),
            )
            return EntryOutcome(None, self.balance(), lot)
        self.account.lifetime_granted += cmd.amount
        # The event of the change before the entry, whose balance check may fire others.
        self._event(
            events.CREDITS_GRANTED,
            amount=cmd.amount,
            lot=events.lot(lot),
            entry_id=self.account.entry_seq + 1,
            request_id=cmd.request_id,
            actor_id=cmd.actor_id,
            labels=dict(cmd.labels),
        )
        entry = self._entry(
            EntryKind.GRANT,
            cmd.amount,
            actor_id=cmd.actor_id,
            request_id=cmd.request_id,
            labels=cmd.labels,
            reason=cmd.source,
            package=cmd.package,
            fingerprint=cmd.fingerprint,
            category=lot.category,
        )
        return EntryOutcome(entry, self.balance(), lot)

    def confirm_grant(self, cmd: ConfirmGrantCmd) -> EntryOutcome:
        """Make a pending grant spendable; confirming a confirmed grant replays its answer.

        Raises:
            MeterError: GRANT_NOT_FOUND, GRANT_VOIDED, GRANT_NOT_PENDING.
        """
        lot = self._pending_lot(cmd.request_id, LotState.CONFIRMED)
        if lot.state is LotState.CONFIRMED:
            return EntryOutcome(self._request_entry(cmd.request_id), self.balance(), lot)
        lot.state = LotState.CONFIRMED
        self._revise(lot)
        self.account.balance += lot.remaining
        self.account.lifetime_granted += lot.remaining
        self._event(
            events.GRANT_CONFIRMED,
            amount=lot.remaining,
            lot=events.lot(lot),
            entry_id=self.account.entry_seq + 1,
            request_id=cmd.request_id,
            actor_id=cmd.actor_id,
        )
        entry = self._entry(
            EntryKind.GRANT,
            lot.remaining,
            actor_id=cmd.actor_id,
            request_id=cmd.request_id,
            reason=lot.source,
            package=lot.package,
            fingerprint=lot.fingerprint,
            category=lot.category,
        )
        if lot.expired(self.now):
            self.expire_lots()  # confirmed after its expiry: granted, and expired at once
        return EntryOutcome(entry, self.balance(), lot)

    def void_grant(self, cmd: VoidGrantCmd) -> EntryOutcome:
        """Remove a pending grant; voiding a voided grant replays its answer.

        Raises:
            MeterError: GRANT_NOT_FOUND, GRANT_CONFIRMED, GRANT_NOT_PENDING.
        """
        lot = self._pending_lot(cmd.request_id, LotState.VOIDED)
        if lot.state is LotState.VOIDED:
            return EntryOutcome(None, self.balance(), lot)
        lot.state, lot.remaining = LotState.VOIDED, 0
        self._revise(lot)
        self._event(
            events.GRANT_VOIDED,
            amount=lot.amount,
            lot=events.lot(lot),
            reason=cmd.reason,
            request_id=cmd.request_id,
            actor_id=cmd.actor_id,
        )
        return EntryOutcome(None, self.balance(), lot)

    def _pending_lot(self, request_id: str, to: LotState) -> Lot:
        """A grant's lot that is pending, or already `to` (confirmed or voided: a replay).

        Raises:
            MeterError: GRANT_NOT_FOUND, GRANT_NOT_PENDING (it never was), and GRANT_CONFIRMED
                or GRANT_VOIDED when it went the other way.
        """
        lot = self._lot_of(request_id)
        if lot is None or request_id in self.holds:
            raise errors.not_found(
                "GRANT_NOT_FOUND",
                f"no grant {request_id!r} in workspace {self.account.workspace_id!r}",
                request_id=request_id,
            )
        if lot.state is LotState.ACTIVE:
            raise errors.precondition(
                "GRANT_NOT_PENDING",
                f"grant {request_id!r} was never pending; it cannot be {to.name.lower()}",
                request_id=request_id,
            )
        if lot.state is not to and lot.state in _SETTLED:
            reason, settled = _SETTLED[lot.state]
            raise errors.precondition(
                reason, f"grant {request_id!r} was {settled}", request_id=request_id
            )
        return lot
