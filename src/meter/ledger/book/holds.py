"""A hold's life: reserve, commit, release, extend, and charge (reserve and commit at once)."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from datetime import datetime, timedelta

from meter import errors
from meter.catalog.model import Usage
from meter.events import types as events
from meter.ledger.book.state import BookState
from meter.ledger.commands import ChargeCmd, CommitCmd, ExtendCmd, ReleaseCmd, ReserveCmd
from meter.ledger.model import (
    AlertKind,
    CommitOutcome,
    EntryKind,
    Hold,
    HoldKind,
    HoldState,
    HoldView,
    ReleaseOutcome,
)

# Prices an operation's actual usage with a given catalog version: (operation, version, usage).
Pricer = Callable[[str, int, Usage], int]


class HoldRules(BookState):
    """The hot path: a hold from reserve to commit or release, and charge."""

    __slots__ = ()  # the state's slots are BookState's

    def reserve(self, cmd: ReserveCmd) -> HoldView:
        """Hold cmd.amount, drawn from lots in burn order.

        Raises:
            MeterError: REQUEST_ID_REUSED, INSUFFICIENT_CREDITS.
        """
        existing = self._claimed(cmd.request_id, cmd.fingerprint, HoldKind.RESERVE)
        if existing is not None:
            return self.view(existing)
        if self.budgets is not None:
            self._require_within_budgets(cmd.actor_id, cmd.labels, cmd.amount, cmd.request_id)
        self._require_available(
            cmd.amount, cmd.operation, cmd.request_id, cmd.actor_id, alert=cmd.alert
        )
        hold = self._new_hold(
            cmd.request_id,
            HoldKind.RESERVE,
            cmd.amount,
            cmd.operation,
            cmd.catalog_version,
            cmd.actor_id,
            cmd.labels,
            cmd.fingerprint,
            self.now + timedelta(seconds=cmd.ttl_s),
        )
        hold.draws = self._draw(cmd.amount)
        self.account.held += cmd.amount
        self._budget_hold(hold, cmd.amount)
        self.account_dirty = True
        return self.view(hold)

    def commit(self, cmd: CommitCmd, price: Pricer) -> CommitOutcome:
        """Charge the actual cost of a hold; a commit after the hold expired is still honoured.

        Raises:
            MeterError: HOLD_NOT_FOUND, HOLD_RELEASED, REQUEST_ID_REUSED, OPERATION_NOT_FOUND.
        """
        hold = self._hold(cmd.request_id)
        if hold.kind is HoldKind.CHARGE:
            raise errors.request_id_reused(cmd.request_id)
        if hold.state is HoldState.COMMITTED:
            if hold.commit_fingerprint != cmd.fingerprint:
                raise errors.request_id_reused(cmd.request_id)
            return self._commit_outcome(hold)
        if hold.state is HoldState.RELEASED:
            raise errors.precondition(
                "HOLD_RELEASED",
                f"hold {cmd.request_id!r} was released; it cannot be committed",
                request_id=cmd.request_id,
            )
        if cmd.amount is not None:
            actual = cmd.amount
        elif cmd.usage is not None:
            actual = price(hold.operation, hold.catalog_version, cmd.usage)
        else:
            actual = hold.amount
        if hold.state is HoldState.HELD and hold.expires_at <= self.now:
            self._expire_hold(hold)
        late = hold.state is HoldState.EXPIRED
        if not late:
            self._budget_hold(hold, -hold.amount)
        if late:
            # The hold's credits went back at expiry: charge what available covers.
            draws = self._draw(min(actual, self.account.available))
        elif actual <= hold.amount:
            self.account.held -= hold.amount
            draws = self._keep(hold.draws, actual)
        else:
            # The excess comes from available, which does not include this hold's credits.
            draws = hold.draws + self._draw(min(actual - hold.amount, self.account.available))
            self.account.held -= hold.amount
        charged = sum(c for _, c in draws)
        hold.draws = draws
        hold.state = HoldState.COMMITTED
        hold.charged = charged
        hold.shortfall = actual - charged
        hold.late = late
        hold.commit_fingerprint = cmd.fingerprint
        hold.finished_at = self.now
        if cmd.labels:
            hold.labels = {**hold.labels, **cmd.labels}
        self._dirty(hold)
        self._charge_entry(hold)
        self._budget_charge(hold, charged)
        if hold.shortfall:
            self._event(
                events.COMMIT_SHORTFALL,
                hold=events.hold(hold),
                charged=hold.charged,
                shortfall=hold.shortfall,
                late=late,
            )
        return self._commit_outcome(hold)

    def release(self, cmd: ReleaseCmd) -> ReleaseOutcome:
        """Return a held hold's credits in full. Releasing a released or expired hold is a no-op;
        a hold past its expiry expires first (as a commit or an extend finds it), whether or
        not the sweeper got to it yet.

        Raises:
            MeterError: HOLD_NOT_FOUND, HOLD_COMMITTED.
        """
        hold = self._hold(cmd.request_id)
        if hold.state is HoldState.HELD and hold.expires_at <= self.now:
            self._expire_hold(hold)
        if hold.state is HoldState.COMMITTED:
            raise errors.precondition(
                "HOLD_COMMITTED",
                f"hold {cmd.request_id!r} was committed; it cannot be released",
                request_id=cmd.request_id,
            )
        if hold.state is HoldState.RELEASED:
            return ReleaseOutcome(self.view(hold), hold.amount)
        if hold.state is HoldState.EXPIRED:
            return ReleaseOutcome(self.view(hold), 0)
        self._give_back(hold.draws, hold.operation, hold.request_id)
        self.account.held -= hold.amount
        self._budget_hold(hold, -hold.amount)
        hold.state = HoldState.RELEASED
        hold.finished_at = self.now
        self._dirty(hold)
        self.account_dirty = True
        return ReleaseOutcome(self.view(hold), hold.amount)

    def extend(self, cmd: ExtendCmd) -> HoldView:
        """Move a held hold's expiry to now + ttl.

        Raises:
            MeterError: HOLD_NOT_FOUND, HOLD_COMMITTED, HOLD_RELEASED, HOLD_EXPIRED.
        """
        hold = self._hold(cmd.request_id)
        if hold.state is HoldState.HELD and hold.expires_at <= self.now:
            self._expire_hold(hold)
        if hold.state is not HoldState.HELD:
            reason = {
                HoldState.COMMITTED: "HOLD_COMMITTED",
                HoldState.RELEASED: "HOLD_RELEASED",
                HoldState.EXPIRED: "HOLD_EXPIRED",
            }[hold.state]
            raise errors.precondition(
                reason,
                f"hold {cmd.request_id!r} is {hold.state.name.lower()}; it cannot be extended",
                request_id=cmd.request_id,
            )
        hold.expires_at = self.now + timedelta(seconds=cmd.ttl_s)
        self._dirty(hold)
        return self.view(hold)

    def charge(self, cmd: ChargeCmd) -> CommitOutcome:
        """Reserve and commit in one step.

        Raises:
            MeterError: REQUEST_ID_REUSED, INSUFFICIENT_CREDITS.
        """
        existing = self._claimed(cmd.request_id, cmd.fingerprint, HoldKind.CHARGE)
        if existing is not None:
            return self._commit_outcome(existing)
        if self.budgets is not None:
            self._require_within_budgets(cmd.actor_id, cmd.labels, cmd.amount, cmd.request_id)
        self._require_available(cmd.amount, cmd.operation, cmd.request_id, cmd.actor_id)
        hold = self._new_hold(
            cmd.request_id,
            HoldKind.CHARGE,
            cmd.amount,
            cmd.operation,
            cmd.catalog_version,
            cmd.actor_id,
            cmd.labels,
            cmd.fingerprint,
            self.now,
        )
        hold.draws = self._draw(cmd.amount)
        hold.state = HoldState.COMMITTED
        hold.charged = cmd.amount
        hold.commit_fingerprint = cmd.fingerprint
        hold.finished_at = self.now
        self._charge_entry(hold)
        self._budget_charge(hold, cmd.amount)
        return self._commit_outcome(hold)

    def _new_hold(
        self,
        request_id: str,
        kind: HoldKind,
        amount: int,
        operation: str,
        version: int,
        actor_id: str,
        labels: Mapping[str, str],
        fingerprint: str,
        expires_at: datetime,
    ) -> Hold:
        self.account.hold_seq += 1
        hold = Hold(
            hold_id=self.account.hold_seq,
            request_id=request_id,
            kind=kind,
            state=HoldState.HELD,
            amount=amount,
            operation=operation,
            catalog_version=version,
            actor_id=actor_id,
            labels=dict(labels),
            draws=[],
            fingerprint=fingerprint,
            expires_at=expires_at,
            created_at=self.now,
        )
        self.holds[request_id] = hold
        self.new_holds.append(hold)
        self.new_hold_ids.add(hold.hold_id)
        self.account_dirty = True
        return hold

    def _require_available(
        self, amount: int, operation: str, request_id: str, actor_id: str, *, alert: bool = True
    ) -> None:
        available = self.account.available
        if amount <= available:
            return
        if alert:
            self._alert(AlertKind.INSUFFICIENT_CREDITS, 0, amount, operation, request_id, actor_id)
        shortfall = amount - available
        raise errors.precondition(
            "INSUFFICIENT_CREDITS",
            f"{amount} credits required, {available} available",
            required=str(amount),
            available=str(available),
            shortfall=str(shortfall),
        )

    def _expire_hold(self, hold: Hold) -> None:
        self._give_back(hold.draws, hold.operation, hold.request_id)
        self.account.held -= hold.amount
        self._budget_hold(hold, -hold.amount)
        hold.state = HoldState.EXPIRED
        hold.finished_at = self.now
        self._dirty(hold)
        self._event(events.HOLD_EXPIRED, hold=events.hold(hold))

    def _charge_entry(self, hold: Hold) -> None:
        self.account.balance -= hold.charged
        self.account.lifetime_used += hold.charged
        self._burn(hold.charged)
        self._entry(
            EntryKind.CHARGE,
            -hold.charged,
            operation=hold.operation,
            actor_id=hold.actor_id,
            request_id=hold.request_id,
            labels=hold.labels,
            shortfall=hold.shortfall,
            late=hold.late,
            category=self._category(hold.draws),
        )

    def _commit_outcome(self, hold: Hold) -> CommitOutcome:
        released = 0
        if hold.kind is HoldKind.RESERVE and not hold.late:
            released = max(hold.amount - hold.charged, 0)
        return CommitOutcome(
            self.view(hold), hold.charged, released, hold.shortfall, hold.late, self.balance()
        )
