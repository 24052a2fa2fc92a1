"""Ledger domain types: accounts, lots, holds, journal entries, alerts, views and outcomes.

The commands that change them are in meter.ledger.commands; what a command produces (a view
or an outcome) is here, beside the state it shows.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import date, datetime
from enum import IntEnum

from meter.ledger.runway import RunwayView

# Bounds from DESIGN.md §2 and §3.
DEFAULT_TTL_S = 15 * 60
MAX_TTL_S = 24 * 60 * 60
MAX_WAIT_FOR_FUNDS_S = 10 * 60
EXPIRING_SOON_DAYS = 30
# credits.expiring is written once per lot, this long before the lot expires (DESIGN.md §9).
EXPIRING_NOTICE_DAYS = 7


class HoldState(IntEnum):
    """Values equal the proto enum numbers."""

    HELD = 1
    COMMITTED = 2
    RELEASED = 3
    EXPIRED = 4


class HoldKind(IntEnum):
    """A Reserve's hold, or the record of an instant Charge (born committed)."""

    RESERVE = 1
    CHARGE = 2


class EntryKind(IntEnum):
    GRANT = 1
    CHARGE = 2
    EXPIRE = 3
    ADJUST = 4
    REFUND = 5


class Level(IntEnum):
    OK = 1
    LOW = 2
    CRITICAL = 3


def level_of(available: int, low: int, critical: int) -> Level:
    if available < critical:
        return Level.CRITICAL
    if available < low:
        return Level.LOW
    return Level.OK


class Category(IntEnum):
    """A lot's kind of credits (DESIGN.md §10); values equal the proto enum numbers."""

    PAID = 1
    PROMOTIONAL = 2
    MANUAL = 3


class LotState(IntEnum):
    """A lot's life: spendable from the start, or pending until its payment is confirmed."""

    ACTIVE = 0
    PENDING = 1
    CONFIRMED = 2  # was pending; spendable
    VOIDED = 3  # was pending; never spendable


class Period(IntEnum):
    """A budget's UTC calendar period, or its whole life (TOTAL, never reset); values equal
    the proto enum numbers."""

    DAY = 1
    WEEK = 2
    MONTH = 3
    TOTAL = 4


DEFAULT_PRIORITY = 50
MAX_PRIORITY = 100


class AlertKind(IntEnum):
    LOW = 1
    CRITICAL = 2
    INSUFFICIENT_CREDITS = 3


@dataclass(slots=True)
class Account:
    """A workspace's row: the running totals, its alert state and its id counters."""

    workspace_id: str
    balance: int  # available + held; what the journal sums to
    held: int
    lifetime_used: int
    lifetime_granted: int
    low_threshold: int
    critical_threshold: int
    alert_level: Level  # the worst notice of the current dip (OK: none); see book/alerts.py
    hold_seq: int
    lot_seq: int
    entry_seq: int
    alert_seq: int
    next_expiry_at: datetime | None
    last_entry_at: datetime | None = None
    last_entry_kind: EntryKind | None = None
    last_entry_amount: int = 0
    last_entry_operation: str = ""
    created_at: datetime | None = None
    event_seq: int = 0
    next_notice_at: datetime | None = None  # when a lot's credits.expiring event is due
    # The policies in force: budgets (member limits among them, DESIGN.md §10, §13) and an
    # auto top-up rule. A book loads their rows only when these say there are some.
    budgets: bool = False
    auto_topup: bool = False
    # The runway (DESIGN.md §13): balance.runway_low's threshold in days (0: none), credits
    # charged less refunds per UTC day, the newest (burn_day) first, and whether that notice
    # was sent for the current dip.
    runway_days: int = 7
    burn: list[int] = field(default_factory=list)
    burn_day: date | None = None
    runway_low: bool = False

    @property
    def available(self) -> int:
        return self.balance - self.held


@dataclass(slots=True)
class Lot:
    """Credits from one source; `remaining` is what is neither spent, held nor expired."""

    lot_id: int
    request_id: str
    amount: int
    remaining: int
    expires_at: datetime | None
    source: str
    package: str
    created_at: datetime
    expiring_noticed: bool = False  # its credits.expiring event was written
    category: Category = Category.PAID
    priority: int = DEFAULT_PRIORITY
    state: LotState = LotState.ACTIVE
    fingerprint: str = ""  # a pending grant's, for its replays (others replay from the journal)

    def burn_key(self) -> tuple[int, bool, datetime | None, int]:
        """Lowest priority first, then earliest expiry, then oldest; lots without expiry last."""
        return (self.priority, self.expires_at is None, self.expires_at, self.lot_id)

    def expired(self, now: datetime) -> bool:
        return self.expires_at is not None and self.expires_at <= now

    @property
    def spendable(self) -> bool:
        return self.state is LotState.ACTIVE or self.state is LotState.CONFIRMED


@dataclass(slots=True)
class Hold:
    """Credits set aside for one job; `draws` says which lots they came from."""

    hold_id: int
    request_id: str
    kind: HoldKind
    state: HoldState
    amount: int
    operation: str
    catalog_version: int
    actor_id: str
    labels: dict[str, str]
    draws: list[list[int]]  # [[lot_id, credits], ...]: held, then (once committed) charged
    fingerprint: str
    expires_at: datetime
    created_at: datetime
    charged: int = 0
    shortfall: int = 0
    refunded: int = 0
    late: bool = False
    commit_fingerprint: str = ""
    finished_at: datetime | None = None


@dataclass(frozen=True, slots=True)
class Entry:
    """One immutable journal row."""

    entry_id: int
    kind: EntryKind
    amount: int
    balance_after: int
    created_at: datetime
    operation: str = ""
    actor_id: str = ""
    request_id: str = ""
    labels: Mapping[str, str] = field(default_factory=dict)
    shortfall: int = 0
    late: bool = False
    reason: str = ""
    package: str = ""
    fingerprint: str = ""
    category: Category | None = None  # the lots' category, when they share one


@dataclass(frozen=True, slots=True)
class AlertEvent:
    event_id: int
    kind: AlertKind
    available: int
    threshold: int
    created_at: datetime
    required: int = 0
    operation: str = ""
    request_id: str = ""


@dataclass(frozen=True, slots=True)
class Event:
    """A row of the events outbox (DESIGN.md §9): written with the change it tells of."""

    sequence: int
    type: str
    created_at: datetime
    data: dict[str, object]  # its balance is added when its command ends


@dataclass(frozen=True, slots=True)
class LastTransaction:
    time: datetime
    kind: EntryKind
    amount: int
    operation: str


@dataclass(frozen=True, slots=True)
class BalanceView:
    """The balance fields of DESIGN.md §2, as of one moment."""

    workspace_id: str
    available: int
    held: int
    lifetime_used: int
    lifetime_granted: int
    level: Level
    low_threshold: int
    critical_threshold: int
    last_transaction: LastTransaction | None = None
    expiring_soon_credits: int = 0
    expiring_soon_earliest: datetime | None = None
    pending: int = 0  # pending grants' credits: not spendable until confirmed
    by_category: tuple[tuple[Category, int], ...] = ()  # available, per category
    # The runway (DESIGN.md §13), on reads of the balance; outcomes of calls go without it.
    runway: RunwayView | None = None
    runway_days: int = 7  # balance.runway_low's threshold

    @property
    def total(self) -> int:
        return self.available + self.held


@dataclass(frozen=True, slots=True)
class HoldView:
    """A hold as callers see it."""

    hold_id: int
    workspace_id: str
    request_id: str
    amount: int
    state: HoldState
    expires_at: datetime
    operation: str
    catalog_version: int
    actor_id: str
    labels: Mapping[str, str]
    created_at: datetime
    charged: int
    finished_at: datetime | None


@dataclass(frozen=True, slots=True)
class Discrepancy:
    """What an audit found: a check whose two sides disagree."""

    workspace_id: str
    check: str
    subject: str
    expected: int
    actual: int
    detail: str


@dataclass(frozen=True, slots=True)
class JournalFilter:
    """Which journal entries a history query wants."""

    kinds: tuple[int, ...] = ()
    operations: tuple[str, ...] = ()
    actor_id: str = ""
    start_time: datetime | None = None
    end_time: datetime | None = None


# Outcomes.


@dataclass(frozen=True, slots=True)
class CommitOutcome:
    hold: HoldView
    charged: int
    released: int
    shortfall: int
    late: bool
    balance: BalanceView


@dataclass(frozen=True, slots=True)
class ReleaseOutcome:
    hold: HoldView
    released: int


@dataclass(frozen=True, slots=True)
class EntryOutcome:
    """GrantCredits, AdjustCredits, Refund, ConfirmGrant, VoidGrant: the entry written (or
    replayed; none for a grant that is pending or was voided), the balance, and the lot."""

    entry: Entry | None
    balance: BalanceView
    lot: Lot | None = None


@dataclass(frozen=True, slots=True)
class TopUpView:
    """A workspace's auto top-up rule as callers see it."""

    workspace_id: str
    enabled: bool
    threshold: int
    package: str
    amount: int
    monthly_limit: int
    failures: int
    outstanding: str
    requested_at: datetime | None
    requested_this_month: int


@dataclass(frozen=True, slots=True)
class SweepOutcome:
    holds_expired: int
    credits_expired: int


Outcome = (
    HoldView
    | CommitOutcome
    | ReleaseOutcome
    | EntryOutcome
    | SweepOutcome
    | BalanceView
    | TopUpView
)
