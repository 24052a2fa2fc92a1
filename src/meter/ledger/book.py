"""A workspace's book: the rules that turn commands into holds, lot draws and journal entries.

A Book holds one workspace's loaded state for the length of one database transaction. Each
method checks everything it needs before it changes anything, so a refused command leaves the
book exactly as it found it and its neighbours in the same batch are unaffected. Storage
loads a Book, the methods run in memory, and storage writes back what changed.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from datetime import datetime, timedelta

from meter import errors
from meter.catalog.model import Usage
from meter.events import types as events
from meter.ledger.model import (
    DEFAULT_PRIORITY,
    EXPIRING_NOTICE_DAYS,
    EXPIRING_SOON_DAYS,
    Account,
    AdjustCmd,
    AlertEvent,
    AlertKind,
    BalanceView,
    Category,
    ChargeCmd,
    CommitCmd,
    CommitOutcome,
    ConfirmGrantCmd,
    Entry,
    EntryKind,
    EntryOutcome,
    Event,
    ExtendCmd,
    GrantCmd,
    Hold,
    HoldKind,
    HoldState,
    HoldView,
    LastTransaction,
    Level,
    Lot,
    LotState,
    RefundCmd,
    ReleaseCmd,
    ReleaseOutcome,
    ReportTopUpFailedCmd,
    ReserveCmd,
    SetAutoTopUpCmd,
    SetThresholdsCmd,
    SweepOutcome,
    TopUpView,
    VoidGrantCmd,
    level_of,
)
from meter.ledger.policies import TOPUP_MAX_FAILURES, Members, TopUp

NOTICE_WINDOW = timedelta(days=EXPIRING_NOTICE_DAYS)

# Prices an operation's actual usage with a given catalog version: (operation, version, usage).
Pricer = Callable[[str, int, Usage], int]


class Book:
    """One workspace's state inside one transaction, and the rules that change it."""

    # A batch builds a Book for every workspace it touches: slots keep that cheap.
    __slots__ = (
        "account",
        "account_dirty",
        "alerts",
        "dirty_holds",
        "dirty_lots",
        "entries",
        "events",
        "holds",
        "lots",
        "members",
        "new_hold_ids",
        "new_holds",
        "new_lot_ids",
        "new_lots",
        "now",
        "request_entries",
        "revised",
        "seen_available",
        "topup",
        "topup_dirty",
    )

    def __init__(
        self,
        account: Account,
        lots: list[Lot],
        holds: Mapping[str, Hold],
        request_entries: Mapping[str, Entry],  # read only
        now: datetime,
        members: Members | None = None,
        topup: TopUp | None = None,
    ) -> None:
        self.account = account
        self.lots = {lot.lot_id: lot for lot in lots}
        self.holds = dict(holds)  # the caller's mapping stays as it was
        self.request_entries = request_entries
        self.now = now
        # What changed, for storage to write back.
        self.account_dirty = False
        self.new_lots: list[Lot] = []
        self.new_lot_ids: set[int] = set()
        self.dirty_lots: set[int] = set()
        self.new_holds: list[Hold] = []
        self.new_hold_ids: set[int] = set()
        self.dirty_holds: dict[int, Hold] = {}
        self.entries: list[Entry] = []
        self.alerts: list[AlertEvent] = []
        # The events outbox's rows (DESIGN.md §9), and the available balance the last one
        # saw: balance.depleted fires when available reaches 0 from above.
        self.events: list[Event] = []
        self.seen_available = account.available
        # Existing lots whose state or credits.expiring flag changed: written whole (new lots
        # carry both). Also in dirty_lots.
        self.revised: set[int] = set()
        # The policies of DESIGN.md §10, when the workspace has them.
        self.members = members
        self.topup = topup
        self.topup_dirty = False

    # Views.

    def balance(self) -> BalanceView:
        a = self.account
        soon = self.now + timedelta(days=EXPIRING_SOON_DAYS)
        credits, earliest, pending = 0, None, 0
        by_category: dict[Category, int] = {}
        for lot in self.lots.values():
            if lot.remaining == 0:
                continue
            if not lot.spendable:
                pending += lot.remaining if lot.state is LotState.PENDING else 0
                continue
            if lot.expired(self.now):
                continue
            by_category[lot.category] = by_category.get(lot.category, 0) + lot.remaining
            if lot.expires_at is not None and lot.expires_at <= soon:
                credits += lot.remaining
                if earliest is None or lot.expires_at < earliest:
                    earliest = lot.expires_at
        last = None
        if a.last_entry_at is not None and a.last_entry_kind is not None:
            last = LastTransaction(
                a.last_entry_at, a.last_entry_kind, a.last_entry_amount, a.last_entry_operation
            )
        return BalanceView(
            workspace_id=a.workspace_id,
            available=a.available,
            held=a.held,
            lifetime_used=a.lifetime_used,
            lifetime_granted=a.lifetime_granted,
            level=level_of(a.available, a.low_threshold, a.critical_threshold),
            low_threshold=a.low_threshold,
            critical_threshold=a.critical_threshold,
            last_transaction=last,
            expiring_soon_credits=credits,
            expiring_soon_earliest=earliest,
            pending=pending,
            by_category=tuple(sorted(by_category.items())),
        )

    def view(self, hold: Hold) -> HoldView:
        return HoldView(
            hold_id=hold.hold_id,
            workspace_id=self.account.workspace_id,
            request_id=hold.request_id,
            amount=hold.amount,
            state=hold.state,
            expires_at=hold.expires_at,
            operation=hold.operation,
            catalog_version=hold.catalog_version,
            actor_id=hold.actor_id,
            labels=hold.labels,
            created_at=hold.created_at,
            charged=hold.charged,
            finished_at=hold.finished_at,
        )

    # Commands.

    def reserve(self, cmd: ReserveCmd) -> HoldView:
        """Hold cmd.amount, drawn from lots in burn order.

        Raises:
            MeterError: REQUEST_ID_REUSED, INSUFFICIENT_CREDITS.
        """
        existing = self._claimed(cmd.request_id, cmd.fingerprint, HoldKind.RESERVE)
        if existing is not None:
            return self.view(existing)
        if self.members is not None and cmd.actor_id:
            self._require_within_limit(cmd.actor_id, cmd.amount, cmd.request_id)
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
        if self.members is not None and cmd.actor_id:
            self.members.hold(cmd.actor_id, cmd.amount, self.now)
        self._touch()
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
        if self.members is not None and hold.actor_id and not late:
            self.members.hold(hold.actor_id, -hold.amount, self.now)
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
        if self.members is not None and hold.actor_id:
            self.members.charge(hold.actor_id, charged, self.now)
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
        """Return a held hold's credits in full. Releasing a released or expired hold is a no-op.

        Raises:
            MeterError: HOLD_NOT_FOUND, HOLD_COMMITTED.
        """
        hold = self._hold(cmd.request_id)
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
        if self.members is not None and hold.actor_id:
            self.members.hold(hold.actor_id, -hold.amount, self.now)
        hold.state = HoldState.RELEASED
        hold.finished_at = self.now
        self._dirty(hold)
        self._touch()
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
        if self.members is not None and cmd.actor_id:
            self._require_within_limit(cmd.actor_id, cmd.amount, cmd.request_id)
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
        if self.members is not None and cmd.actor_id:
            self.members.charge(cmd.actor_id, cmd.amount, self.now)
        return self._commit_outcome(hold)

    def grant(self, cmd: GrantCmd) -> EntryOutcome:
        """Add a lot of credits.

        Raises:
            MeterError: REQUEST_ID_REUSED.
        """
        replay = self._entry_replay(cmd.request_id, cmd.fingerprint)
        granted = self._lot_of(cmd.request_id)
        if replay is not None:
            return EntryOutcome(replay, self.balance(), granted)
        if granted is not None:
            # A pending grant (or a voided one) has a lot and no entry yet.
            if granted.fingerprint != cmd.fingerprint:
                raise errors.request_id_reused(cmd.request_id)
            return EntryOutcome(None, self.balance(), granted)
        state = LotState.PENDING if cmd.pending else LotState.ACTIVE
        lot = self._new_lot(
            cmd.request_id,
            cmd.amount,
            cmd.expires_at,
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
        lot = self._pending_lot(cmd.request_id, "confirmed")
        if lot.state is LotState.CONFIRMED:
            return EntryOutcome(self.request_entries.get(cmd.request_id), self.balance(), lot)
        if lot.state is LotState.VOIDED:
            raise errors.precondition(
                "GRANT_VOIDED",
                f"grant {cmd.request_id!r} was voided; it cannot be confirmed",
                request_id=cmd.request_id,
            )
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
        lot = self._pending_lot(cmd.request_id, "voided")
        if lot.state is LotState.VOIDED:
            return EntryOutcome(None, self.balance(), lot)
        if lot.state is LotState.CONFIRMED:
            raise errors.precondition(
                "GRANT_CONFIRMED",
                f"grant {cmd.request_id!r} was confirmed; it cannot be voided (refund or adjust)",
                request_id=cmd.request_id,
            )
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

    def set_auto_topup(self, cmd: SetAutoTopUpCmd) -> TopUpView:
        """Set the auto top-up rule; a request is made at once if the balance is below it."""
        t = self.topup
        if not cmd.enabled and not cmd.package and not cmd.amount:
            # Disable, keeping the rule as it is.
            if t is None:
                return TopUpView(self.account.workspace_id, False, 0, "", 0, 0, 0, "", None, 0)
            t.enabled = False
        elif t is None:
            t = self.topup = TopUp(
                cmd.enabled, cmd.threshold, cmd.package, cmd.amount, cmd.monthly_limit
            )
        else:
            if cmd.enabled and not t.enabled:
                t.failures = 0  # enabled again: a fresh start
            t.enabled, t.threshold, t.monthly_limit = cmd.enabled, cmd.threshold, cmd.monthly_limit
            t.package, t.amount = cmd.package, cmd.amount
        self.topup_dirty = True
        self.account.auto_topup = True
        self._touch()
        return self.topup_view()

    def report_topup_failed(self, cmd: ReportTopUpFailedCmd) -> TopUpView:
        """The payment of a top-up request failed; TOPUP_MAX_FAILURES in a row disable the rule.

        Raises:
            MeterError: TOPUP_NOT_OUTSTANDING.
        """
        t = self.topup
        if t is not None and t.last_failed == cmd.request_id and cmd.request_id:
            return self.topup_view()  # a replay
        if t is None or not t.outstanding or t.outstanding != cmd.request_id:
            outstanding = t.outstanding if t is not None else ""
            raise errors.precondition(
                "TOPUP_NOT_OUTSTANDING",
                f"{cmd.request_id!r} is not the outstanding top-up request"
                + (f" ({outstanding!r} is)" if outstanding else " (none is)"),
                request_id=cmd.request_id,
                outstanding=outstanding,
            )
        t.outstanding, t.last_failed = "", cmd.request_id
        t.failures += 1
        self.topup_dirty = True
        self._event(
            events.TOPUP_FAILED, request_id=cmd.request_id, reason=cmd.reason, failures=t.failures
        )
        if t.failures >= TOPUP_MAX_FAILURES:
            t.enabled = False
            self._event(
                events.TOPUP_DISABLED,
                failures=t.failures,
                reason=f"{t.failures} top-up payments failed in a row",
            )
        return self.topup_view()

    def topup_view(self) -> TopUpView:
        t = self.topup
        assert t is not None
        return TopUpView(
            self.account.workspace_id,
            t.enabled,
            t.threshold,
            t.package,
            t.amount,
            t.monthly_limit,
            t.failures,
            t.outstanding,
            t.requested_at if t.outstanding else None,
            t.requested_this_month(self.now),
        )

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
        if self.members is not None and hold.actor_id:
            self.members.refund(hold.actor_id, amount, hold.finished_at, self.now)
        self.account.lifetime_used -= amount
        self.account.balance += amount
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

    def sweep(self) -> SweepOutcome:
        """Expire every overdue hold and lot this book holds."""
        before = sum(-e.amount for e in self.entries if e.kind is EntryKind.EXPIRE)
        holds = 0
        for hold in list(self.holds.values()):
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

    # Internals.

    def _claimed(self, request_id: str, fingerprint: str, kind: HoldKind) -> Hold | None:
        """The hold a replay returns, None for a new request; raises if the id is taken."""
        hold = self.holds.get(request_id)
        if hold is None:
            if request_id in self.request_entries:
                raise errors.request_id_reused(request_id)
            return None
        if hold.kind is not kind or hold.fingerprint != fingerprint:
            raise errors.request_id_reused(request_id)
        return hold

    def _entry_replay(self, request_id: str, fingerprint: str) -> Entry | None:
        entry = self.request_entries.get(request_id)
        if entry is None:
            if request_id in self.holds:
                raise errors.request_id_reused(request_id)
            return None
        if entry.fingerprint != fingerprint:
            raise errors.request_id_reused(request_id)
        return entry

    def _hold(self, request_id: str) -> Hold:
        hold = self.holds.get(request_id)
        if hold is None:
            raise errors.hold_not_found(self.account.workspace_id, request_id)
        return hold

    def _require_within_limit(self, actor_id: str, amount: int, request_id: str) -> None:
        """Refuse what would take a member past one of its limits (DESIGN.md §10); the first
        refusal of a period writes a member.limit_reached event."""
        assert self.members is not None
        breach = self.members.breach(actor_id, amount, self.now)
        if breach is None:
            return
        period = breach.period.name.lower()
        resets_at = breach.resets_at.isoformat()
        if self.members.notice(actor_id, breach.period, self.now):
            self._event(
                events.MEMBER_LIMIT_REACHED,
                actor_id=actor_id,
                period=period,
                limit=breach.limit,
                used=breach.used,
                remaining=breach.remaining,
                resets_at=resets_at,
                required=amount,
                request_id=request_id,
            )
        raise errors.precondition(
            "MEMBER_LIMIT_REACHED",
            f"{actor_id!r} has used {breach.used} of its {period}ly limit of {breach.limit}; "
            f"{amount} more would exceed it (resets at {resets_at})",
            actor_id=actor_id,
            period=period,
            limit=str(breach.limit),
            used=str(breach.used),
            remaining=str(breach.remaining),
            resets_at=resets_at,
            required=str(amount),
        )

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

    def _new_lot(
        self,
        request_id: str,
        amount: int,
        expires_at: datetime | None,
        source: str,
        package: str,
        category: Category = Category.PAID,
        priority: int = DEFAULT_PRIORITY,
        state: LotState = LotState.ACTIVE,
        fingerprint: str = "",
    ) -> Lot:
        self.account.lot_seq += 1
        lot = Lot(
            lot_id=self.account.lot_seq,
            request_id=request_id,
            amount=amount,
            remaining=amount,
            expires_at=expires_at,
            source=source,
            package=package,
            created_at=self.now,
            category=category,
            priority=priority,
            state=state,
            fingerprint=fingerprint,
        )
        self.lots[lot.lot_id] = lot
        self.new_lots.append(lot)
        self.new_lot_ids.add(lot.lot_id)
        if lot.spendable:
            self.account.balance += amount
        return lot

    def _lot_of(self, request_id: str) -> Lot | None:
        """The lot granted under a request id, if the book has it."""
        return next((lt for lt in self.lots.values() if lt.request_id == request_id), None)

    def _pending_lot(self, request_id: str, verb: str) -> Lot:
        """A grant's lot that was pending (and may be confirmed or voided by now)."""
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
                f"grant {request_id!r} was never pending; it cannot be {verb}",
                request_id=request_id,
            )
        return lot

    def _revise(self, lot: Lot) -> None:
        """Note a change of an existing lot's state or flags (written whole)."""
        if lot.lot_id not in self.new_lot_ids:
            self.dirty_lots.add(lot.lot_id)
            self.revised.add(lot.lot_id)
        self.account_dirty = True

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
        self._touch()

    def _expire_hold(self, hold: Hold) -> None:
        self._give_back(hold.draws, hold.operation, hold.request_id)
        self.account.held -= hold.amount
        if self.members is not None and hold.actor_id:
            self.members.hold(hold.actor_id, -hold.amount, self.now)
        hold.state = HoldState.EXPIRED
        hold.finished_at = self.now
        self._dirty(hold)
        self._event(events.HOLD_EXPIRED, hold=events.hold(hold))

    def _charge_entry(self, hold: Hold) -> None:
        self.account.balance -= hold.charged
        self.account.lifetime_used += hold.charged
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

    def _entry(self, kind: EntryKind, amount: int, **fields: object) -> Entry:
        """Append a journal entry; the caller has already moved the balance by `amount`."""
        a = self.account
        a.entry_seq += 1
        entry = Entry(
            entry_id=a.entry_seq,
            kind=kind,
            amount=amount,
            balance_after=a.balance,
            created_at=self.now,
            **fields,  # type: ignore[arg-type]
        )
        self.entries.append(entry)
        a.last_entry_at, a.last_entry_kind = self.now, kind
        a.last_entry_amount, a.last_entry_operation = amount, str(fields.get("operation", ""))
        self._touch()
        return entry

    def _commit_outcome(self, hold: Hold) -> CommitOutcome:
        released = 0
        if hold.kind is HoldKind.RESERVE and not hold.late:
            released = max(hold.amount - hold.charged, 0)
        return CommitOutcome(
            self.view(hold), hold.charged, released, hold.shortfall, hold.late, self.balance()
        )

    def _lot_changed(self, lot: Lot) -> None:
        if lot.lot_id not in self.new_lot_ids:
            self.dirty_lots.add(lot.lot_id)

    def _dirty(self, hold: Hold) -> None:
        if hold.hold_id not in self.new_hold_ids:
            self.dirty_holds[hold.hold_id] = hold

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
            for lot in self.lots.values():
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

    def _top_up(self) -> None:
        """Request a top-up when available is below the rule's threshold and none is
        outstanding: the event is written in the transaction of the change that crossed it."""
        t = self.topup
        assert t is not None
        before = t.outstanding
        t.lapse(self.now)
        if t.outstanding != before:
            self.topup_dirty = True
        if not t.due(self.account.available, self.now):
            return
        request_id = t.request(self.account.workspace_id, self.now)
        self.topup_dirty = True
        self._event(
            events.TOPUP_REQUESTED,
            request_id=request_id,
            package=t.package,
            amount=t.amount,
            threshold=t.threshold,
            requested_this_month=t.month_count,
            monthly_limit=t.monthly_limit,
        )

    def _alert(
        self,
        kind: AlertKind,
        threshold: int,
        required: int = 0,
        operation: str = "",
        request_id: str = "",
        actor_id: str = "",
    ) -> None:
        self.account.alert_seq += 1
        self.account_dirty = True
        if kind is AlertKind.INSUFFICIENT_CREDITS:
            available = self.account.available
            self._event(
                events.RESERVATION_REFUSED,
                required=required,
                available=available,
                shortfall=required - available,
                operation=operation,
                request_id=request_id,
                actor_id=actor_id,
            )
        else:
            self._event(events.ALERT_TYPES[kind], threshold=threshold)
        self.alerts.append(
            AlertEvent(
                self.account.alert_seq,
                kind,
                self.account.available,
                threshold,
                self.now,
                required,
                operation,
                request_id,
            )
        )

    def _event(self, type_: str, **data: object) -> None:
        """Add an event to the outbox, with the balance as it is now."""
        a = self.account
        a.event_seq += 1
        self.account_dirty = True
        self.events.append(
            Event(
                a.event_seq,
                type_,
                self.now,
                {
                    "workspace_id": a.workspace_id,
                    "sequence": a.event_seq,
                    **data,
                    "balance": events.balance(a),
                },
            )
        )
