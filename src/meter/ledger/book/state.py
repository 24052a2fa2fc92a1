"""A book's state: what storage loaded, what changed, the views, and the records it adds.

The records are journal entries, outbox events, alerts and new lots: each takes the next
number of its sequence from the account, and the seams that write one share its method here.
The rules live in the mixins beside this module, one seam each (holds.py, lots.py, ...), and
`Book` (book/__init__.py) combines them. Every mixin declares `__slots__ = ()` and the state's
slots are all here, so a Book is as cheap to build as one class, and a method is found on the
Book's type at the same cost as before the split (no wrapper, no delegate on the hot path).
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime, timedelta
from typing import TYPE_CHECKING

from meter import errors
from meter.events import types as events
from meter.ledger.budgets import Budgets
from meter.ledger.model import (
    DEFAULT_PRIORITY,
    EXPIRING_SOON_DAYS,
    Account,
    AlertEvent,
    AlertKind,
    BalanceView,
    Category,
    Entry,
    EntryKind,
    Event,
    Hold,
    HoldKind,
    HoldView,
    LastTransaction,
    Lot,
    LotState,
    level_of,
)
from meter.ledger.policies import TopUp
from meter.ledger.runway import RunwayView

# The kinds of entry a request id names on its own (GrantCredits, AdjustCredits, Refund).
_REQUEST_KINDS = (EntryKind.GRANT, EntryKind.ADJUST, EntryKind.REFUND)


class BookState:
    """One workspace's state inside one transaction."""

    # A batch builds a Book for every workspace it touches: slots keep that cheap.
    __slots__ = (
        "account",
        "account_dirty",
        "alerts",
        "budgets",
        "dirty_holds",
        "dirty_lots",
        "entries",
        "events",
        "holds",
        "lots",
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
        "unsettled",
    )

    def __init__(
        self,
        account: Account,
        lots: list[Lot],
        holds: Mapping[str, Hold],
        request_entries: Mapping[str, Entry],  # read only
        now: datetime,
        budgets: Budgets | None = None,
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
        # The events outbox's rows (DESIGN.md §9); those from `unsettled` on belong to the
        # command in progress and get its balance when it ends. `seen_available` is available
        # as the last command left it: notices compare it with the next one's (alerts.py).
        self.events: list[Event] = []
        self.unsettled = 0
        self.seen_available = account.available
        # Existing lots whose state or credits.expiring flag changed: written whole (new lots
        # carry both). Also in dirty_lots.
        self.revised: set[int] = set()
        # The policies of DESIGN.md §10 and §13, when the workspace has them.
        self.budgets = budgets
        self.topup = topup
        self.topup_dirty = False

    def balance(self, runway: bool = False) -> BalanceView:
        """The balance now; with its `runway` (what reads show: outcomes go without)."""
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
            runway=self.runway() if runway else None,
            runway_days=a.runway_days,
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
        self.account_dirty = True
        return entry

    def _event(self, type_: str, **data: object) -> None:
        """Add an event to the outbox; it gets the balance after its command (AlertRules.settle)."""
        a = self.account
        a.event_seq += 1
        self.account_dirty = True
        self.events.append(
            Event(
                a.event_seq,
                type_,
                self.now,
                {"workspace_id": a.workspace_id, "sequence": a.event_seq, **data},
            )
        )

    def _settle_events(self) -> None:
        """Give the events written since the last settle the balance as it is now."""
        if self.unsettled < len(self.events):
            balance = events.balance(self.account)
            for e in self.events[self.unsettled :]:
                e.data["balance"] = balance
            self.unsettled = len(self.events)

    def _alert(
        self,
        kind: AlertKind,
        threshold: int,
        required: int = 0,
        operation: str = "",
        request_id: str = "",
        actor_id: str = "",
    ) -> None:
        """Record a balance alert, and its event in the outbox: a refused reservation's for
        INSUFFICIENT_CREDITS, the threshold's for the others."""
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
        """Add a lot of `amount` credits; a spendable one adds them to the balance."""
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

    def _lot_changed(self, lot: Lot) -> None:
        if lot.lot_id not in self.new_lot_ids:
            self.dirty_lots.add(lot.lot_id)

    def _dirty(self, hold: Hold) -> None:
        if hold.hold_id not in self.new_hold_ids:
            self.dirty_holds[hold.hold_id] = hold

    def _revise(self, lot: Lot) -> None:
        """Note a change of an existing lot's state or flags (written whole)."""
        if lot.lot_id not in self.new_lot_ids:
            self.dirty_lots.add(lot.lot_id)
            self.revised.add(lot.lot_id)
        self.account_dirty = True

    def _claimed(self, request_id: str, fingerprint: str, kind: HoldKind) -> Hold | None:
        """The hold a replay returns, None for a new request; raises if the id is taken."""
        hold = self.holds.get(request_id)
        if hold is None:
            if request_id in self.request_entries or self._lot_of(request_id) is not None:
                raise errors.request_id_reused(request_id)
            return None
        if hold.kind is not kind or hold.fingerprint != fingerprint:
            raise errors.request_id_reused(request_id)
        return hold

    def _request_entry(self, request_id: str) -> Entry | None:
        """The grant, adjustment or refund entry of a request id: stored, or written by this
        book (two identical requests in one batch: the second replays the first)."""
        entry = self.request_entries.get(request_id)
        if entry is None and self.entries:
            entry = next(
                (
                    e
                    for e in self.entries
                    if e.request_id == request_id and e.kind in _REQUEST_KINDS
                ),
                None,
            )
        return entry

    def _entry_replay(
        self, request_id: str, fingerprint: str, *, grant: bool = False
    ) -> Entry | None:
        """The entry a replay of a grant, adjustment or refund returns; None for a new request
        (or, for a `grant`, one without an entry: pending or voided, told apart by grants).

        Raises:
            MeterError: REQUEST_ID_REUSED when a hold or another grant has the id, or its entry
                other parameters.
        """
        entry = self._request_entry(request_id)
        if entry is None:
            if request_id in self.holds or (not grant and self._lot_of(request_id) is not None):
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

    # Rules that one seam uses from another, for the type checker: at run time each is found
    # on the Book's own type, from the mixin that writes it.
    if TYPE_CHECKING:

        def _require_available(
            self, amount: int, operation: str, request_id: str, actor_id: str, *, alert: bool = True
        ) -> None: ...

        def _expire_hold(self, hold: Hold) -> None: ...

        def _lot_of(self, request_id: str) -> Lot | None: ...

        def _category(self, draws: list[list[int]]) -> Category | None: ...

        def _draw(self, amount: int) -> list[list[int]]: ...

        def _keep(self, draws: list[list[int]], keep: int) -> list[list[int]]: ...

        def _give_back(
            self, draws: list[list[int]], operation: str, request_id: str, *, credit: bool = False
        ) -> None: ...

        def expire_lots(self) -> None: ...

        def _top_up(self) -> None: ...

        def _require_within_budgets(
            self, actor_id: str, labels: Mapping[str, str], amount: int, request_id: str
        ) -> None: ...

        def _budget_hold(self, hold: Hold, delta: int) -> None: ...

        def _budget_charge(self, hold: Hold, charged: int) -> None: ...

        def _settle_budgets(self) -> None: ...

        def _burn(self, amount: int) -> None: ...

        def _check_runway(self) -> None: ...

        def runway(self) -> RunwayView: ...
