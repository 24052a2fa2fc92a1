"""A model of workspaces as their users see them, for the model-based test (test_promises.py).

It restates DESIGN.md §2-§5, §9 and §10 as directly as it can: lots in burn order, holds and
their draws, the journal, balance notices once per crossing, events with the balance after
their command, member limits recomputed from the holds, auto top-up, refunds, adjustments and
pending grants. It is slow and plain on purpose: every figure is recomputed from the records
when it is asked for, so there is no running total to get wrong. Where DESIGN.md is silent it
follows what the product's docs and the Book promise (docs/credit-policies.md,
docs/events-and-webhooks.md), and says so.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from fractions import Fraction
from typing import Any

LOW, CRITICAL, REFUSED = 1, 2, 3  # alert kinds, as the proto numbers them
DAY, WEEK, MONTH, TOTAL = 1, 2, 3, 4  # limit periods, as the proto numbers them
PERIOD_NAMES = {DAY: "day", WEEK: "week", MONTH: "month", TOTAL: "total"}
PAID, PROMOTIONAL, MANUAL = 1, 2, 3
EXPIRING_SOON = timedelta(days=30)
NOTICE_WINDOW = timedelta(days=7)
TOPUP_LAPSE = timedelta(hours=24)
PACKAGES = {"Starter": 100, "Basic": 250, "Popular": 550, "Pro": 1100, "Max": 2350}
PACKAGE_VALIDITY = timedelta(days=365)
EPOCH = datetime.min.replace(tzinfo=UTC)


class RefusedError(Exception):
    """The model's refusal: the status code's name and the ErrorInfo reason."""

    def __init__(self, code: str, reason: str) -> None:
        super().__init__(f"{code} {reason}")
        self.code, self.reason = code, reason


def _reused() -> RefusedError:
    return RefusedError("INVALID_ARGUMENT", "REQUEST_ID_REUSED")


def period_start(period: int, at: datetime) -> datetime:
    if period == TOTAL:
        return datetime.min.replace(tzinfo=UTC)
    day = at.astimezone(UTC).replace(hour=0, minute=0, second=0, microsecond=0)
    if period == DAY:
        return day
    if period == WEEK:
        return day - timedelta(days=day.weekday())
    return day.replace(day=1)


def period_end(period: int, at: datetime) -> datetime | None:
    if period == TOTAL:
        return None
    start = period_start(period, at)
    if period == DAY:
        return start + timedelta(days=1)
    if period == WEEK:
        return start + timedelta(days=7)
    return (start + timedelta(days=32)).replace(day=1)


def member_budget_id(actor: str, period: int) -> str:
    """The budget a member limit is (SetMemberLimit's)."""
    return f"member:{actor or '*'}:{PERIOD_NAMES[period]}"


@dataclass(frozen=True)
class Budget:
    budget_id: str
    key: str  # actor_id or a label key
    value: str  # '' = every value on its own
    period: int
    limit: int
    warn_at: tuple[int, ...] = (80,)
    enabled: bool = True


@dataclass
class Lot:
    lot_id: int
    request_id: str
    amount: int
    remaining: int
    expires_at: datetime | None
    category: int
    priority: int
    state: str  # active, pending, confirmed, voided
    params: tuple[Any, ...] = ()  # a grant's, for its replays
    noticed: bool = False  # its credits.expiring event was written

    @property
    def spendable(self) -> bool:
        return self.state in ("active", "confirmed")

    def expired(self, now: datetime) -> bool:
        return self.expires_at is not None and self.expires_at <= now

    def burn_key(self) -> tuple[Any, ...]:
        far = datetime.max.replace(tzinfo=UTC)
        return (self.priority, self.expires_at is None, self.expires_at or far, self.lot_id)


@dataclass
class Hold:
    hold_id: int
    request_id: str
    kind: str  # reserve, charge
    amount: int
    actor: str
    operation: str
    params: tuple[Any, ...]
    expires_at: datetime
    labels: dict[str, str] = field(default_factory=dict)
    draws: list[list[int]] = field(default_factory=list)
    state: str = "held"  # held, committed, released, expired
    charged: int = 0
    shortfall: int = 0
    refunded: int = 0
    late: bool = False
    commit_params: tuple[Any, ...] = ()
    finished_at: datetime | None = None

    @property
    def released(self) -> int:
        """What a commit answers as released: the hold's unspent part, unless it was late."""
        if self.kind != "reserve" or self.late:
            return 0
        return max(self.amount - self.charged, 0)


@dataclass
class Entry:
    kind: str  # grant, charge, expire, adjust, refund
    amount: int
    balance_after: int
    request_id: str = ""
    operation: str = ""
    actor: str = ""
    shortfall: int = 0
    late: bool = False
    params: tuple[Any, ...] = ()
    charge_request_id: str = ""  # a refund's
    at: datetime = EPOCH


@dataclass
class Event:
    type: str
    fields: dict[str, Any]  # the data fields the test compares (besides the balance)
    balance: dict[str, Any] | None = None  # the balance after the event's command


@dataclass
class Alert:
    kind: int
    available: int
    threshold: int
    required: int = 0
    request_id: str = ""


@dataclass
class TopUp:
    enabled: bool
    threshold: int
    package: str
    amount: int
    monthly_limit: int
    failures: int = 0
    seq: int = 0
    outstanding: str = ""
    requested_at: datetime | None = None
    month: datetime | None = None
    month_count: int = 0
    last_failed: str = ""

    def requested_this_month(self, now: datetime) -> int:
        return self.month_count if self.month == period_start(MONTH, now) else 0


class Workspace:
    """One workspace. Every public method is one call: it changes the model as the call would
    change the ledger and returns its answer, or raises RefusedError having changed nothing but
    what a refusal writes (its event and alert, and expiries that were due anyway)."""

    def __init__(self, workspace_id: str, now: datetime) -> None:
        self.id = workspace_id
        self.now = now  # the ledger's time (the machine moves it)
        self.lots: list[Lot] = []
        self.holds: dict[str, Hold] = {}
        self.journal: list[Entry] = []
        self.events: list[Event] = []
        self.alerts: list[Alert] = []
        self.held = 0
        self.lifetime_used = 0
        self.lifetime_granted = 0
        self.low, self.critical = 100, 10
        self.notified = 0  # the worst balance notice of the current dip: 0, LOW or CRITICAL
        self.budgets: dict[str, Budget] = {}
        self.warned: set[tuple[str, str, datetime, int]] = set()
        self.exceeded: set[tuple[str, str, datetime]] = set()
        self.runway_days = 7
        self.runway_low = False
        self._spend_before: dict[tuple[str, str], int] = {}
        self.topup: TopUp | None = None
        # A command's bookkeeping: what available was before it, where its events start,
        # and whether it changed anything (the ledger writes back, and sends notices of lots
        # about to expire, only then).
        self._before = 0
        self._first_event = 0
        self._changed = False

    # The balance, recomputed from the records.

    @property
    def balance(self) -> int:
        """Available + held: what the journal sums to."""
        return sum(e.amount for e in self.journal)

    @property
    def available(self) -> int:
        return self.balance - self.held

    def level(self) -> int:
        if self.available < self.critical:
            return 3
        if self.available < self.low:
            return 2
        return 1

    def view(self, now: datetime) -> dict[str, Any]:
        live = [lt for lt in self.lots if lt.remaining > 0 and lt.spendable and not lt.expired(now)]
        soon = [
            lt for lt in live if lt.expires_at is not None and lt.expires_at <= now + EXPIRING_SOON
        ]
        by_category: dict[int, int] = {}
        for lt in live:
            by_category[lt.category] = by_category.get(lt.category, 0) + lt.remaining
        last = self.journal[-1] if self.journal else None
        return {
            "available": self.available,
            "held": self.held,
            "lifetime_used": self.lifetime_used,
            "lifetime_granted": self.lifetime_granted,
            "level": self.level(),
            "pending": sum(lt.remaining for lt in self.lots if lt.state == "pending"),
            "by_category": sorted(by_category.items()),
            "last": None if last is None else (last.kind, last.amount, last.operation),
            "expiring_soon": (
                sum(lt.remaining for lt in soon),
                min((lt.expires_at for lt in soon), default=None),  # type: ignore[type-var]
            ),
            "thresholds": (self.low, self.critical),
        }

    def event_balance(self) -> dict[str, Any]:
        return {
            "available": self.available,
            "held": self.held,
            "level": {1: "ok", 2: "low", 3: "critical"}[self.level()],
            "lifetime_used": self.lifetime_used,
            "lifetime_granted": self.lifetime_granted,
        }

    # A command's frame: notices are decided from available before and after it.

    def begin(self) -> None:
        self._before = self.available
        self._first_event = len(self.events)
        self._spend_before = self._spend_snapshot(self.now) if self.budgets else {}

    def end(self, now: datetime, *, last: bool = True) -> None:
        """What ends every command, refused or not: the crossings it made, a top-up request if
        due, and the balance in its events. When the `last` command of a batch ends, and any
        of its commands changed the workspace, the notices of lots about to expire follow."""
        if self.budgets:
            self._budget_crossings(now)
        before, after = self._before, self.available
        if after != before:
            self._changed = True
            if before >= self.low > after:
                self._alert(LOW, self.low)
                self.notified = max(self.notified, LOW)
            if before >= self.critical > after:
                self._alert(CRITICAL, self.critical)
                self.notified = CRITICAL
            if after == 0:
                self._event("balance.depleted")
            if after >= self.low:
                if self.notified:
                    self.notified = 0
                    self._event("balance.recovered", threshold=self.low)
            elif after >= self.critical and self.notified == CRITICAL:
                self.notified = LOW
            self._top_up(now)
            self._check_runway(now)
        if len(self.events) > self._first_event:
            self._changed = True
        balance = self.event_balance()
        for e in self.events[self._first_event :]:
            e.balance = balance
        if last and self._changed:
            self._changed = False
            self.begin()
            self._expiring_notices(now)
            for e in self.events[self._first_event :]:
                e.balance = balance

    def _expiring_notices(self, now: datetime) -> None:
        for lt in sorted(self.lots, key=lambda x: x.lot_id):
            at = lt.expires_at
            if lt.remaining == 0 or at is None or not lt.spendable or lt.noticed:
                continue
            if at - NOTICE_WINDOW <= now < at:
                lt.noticed = True
                self._event("credits.expiring", lot=lt.lot_id, remaining=lt.remaining)

    # Records.

    def _event(self, type_: str, **fields: Any) -> None:
        self.events.append(Event(type_, fields))

    def _alert(self, kind: int, threshold: int, required: int = 0, request_id: str = "") -> None:
        self.alerts.append(Alert(kind, self.available, threshold, required, request_id))
        if kind == REFUSED:
            self._event(
                "reservation.refused",
                required=required,
                available=self.available,
                shortfall=required - self.available,
                request_id=request_id,
            )
        else:
            self._event("balance.low" if kind == LOW else "balance.critical", threshold=threshold)

    def _entry(self, kind: str, amount: int, **fields: Any) -> Entry:
        """A journal entry; the caller has moved the lots and holds already."""
        entry = Entry(kind, amount, self.balance + amount, at=self.now, **fields)
        self.journal.append(entry)
        return entry

    # Lots.

    def _burn_order(self, now: datetime) -> list[Lot]:
        return sorted(
            (lt for lt in self.lots if lt.remaining > 0 and lt.spendable and not lt.expired(now)),
            key=Lot.burn_key,
        )

    def _draw(self, amount: int, now: datetime) -> list[list[int]]:
        draws, left = [], amount
        for lt in self._burn_order(now):
            if left == 0:
                break
            take = min(left, lt.remaining)
            lt.remaining -= take
            draws.append([lt.lot_id, take])
            left -= take
        assert left == 0, "the model drew more than its lots hold"
        return draws

    def _lot(self, lot_id: int) -> Lot:
        return next(lt for lt in self.lots if lt.lot_id == lot_id)

    def _give_back(
        self,
        draws: list[list[int]],
        operation: str,
        request_id: str,
        now: datetime,
        *,
        credit: bool = False,
    ) -> None:
        """Credits back to their lots; what lands on an expired lot expires at once."""
        expired = 0
        for lot_id, n in draws:
            lt = self._lot(lot_id)
            if lt.expired(now):
                expired += n
            else:
                lt.remaining += n
        if expired:
            reason = "refunded to an expired lot" if credit else "returned to an expired lot"
            self._entry("expire", -expired, operation=operation, request_id=request_id)
            self._event("credits.expired", amount=expired, reason=reason)

    def _new_lot(
        self,
        request_id: str,
        amount: int,
        expires_at: datetime | None,
        category: int,
        priority: int,
        state: str,
        params: tuple[Any, ...] = (),
    ) -> Lot:
        lt = Lot(
            len(self.lots) + 1,
            request_id,
            amount,
            amount,
            expires_at,
            category,
            priority,
            state,
            params,
        )
        self.lots.append(lt)
        return lt

    def expire_lots(self, now: datetime) -> None:
        for lt in sorted(self.lots, key=Lot.burn_key):
            if lt.remaining > 0 and lt.spendable and lt.expired(now):
                amount, lt.remaining = lt.remaining, 0
                self._entry("expire", -amount)
                self._event("credits.expired", amount=amount, reason="lot expired")

    # Request ids: one namespace per workspace.

    def _entry_of(self, request_id: str) -> Entry | None:
        return next(
            (
                e
                for e in self.journal
                if e.request_id == request_id and e.kind in ("grant", "adjust", "refund")
            ),
            None,
        )

    def _granted(self, request_id: str) -> bool:
        """Whether a lot has the request id: a grant's, pending or voided ones included."""
        return any(lt.request_id == request_id for lt in self.lots)

    def _claimed(self, request_id: str, kind: str, params: tuple[Any, ...]) -> Hold | None:
        hold = self.holds.get(request_id)
        if hold is None:
            if self._entry_of(request_id) is not None or self._granted(request_id):
                raise _reused()
            return None
        if hold.kind != kind or hold.params != params:
            raise _reused()
        return hold

    def _replay(
        self, request_id: str, params: tuple[Any, ...], *, grant: bool = False
    ) -> Entry | None:
        entry = self._entry_of(request_id)
        if entry is None:
            if request_id in self.holds or (not grant and self._granted(request_id)):
                raise _reused()
            return None
        if entry.params != params:
            raise _reused()
        return entry

    # Budgets (DESIGN.md §13; member limits are budgets of the actor_id key), their spend
    # recomputed from the holds.

    def scope_value(self, h: Hold, key: str) -> str:
        return h.actor if key == "actor_id" else h.labels.get(key, "")

    def spend_of(self, b: Budget, value: str, now: datetime) -> int:
        """What a value of a budget's scope holds now plus what it was charged (less
        refunds) in the budget's period."""
        start = period_start(b.period, now)
        total = 0
        for h in self.holds.values():
            if self.scope_value(h, b.key) != value:
                continue
            if h.state == "held":
                total += h.amount
            elif h.state == "committed" and h.finished_at is not None and h.finished_at >= start:
                total += h.charged - h.refunded
        return total

    def applying(self, actor: str, labels: dict[str, str]) -> list[tuple[Budget, str]]:
        """The enabled budgets a request falls under (a budget naming a value replaces its
        key's default of the same period for that value), in budget id order."""
        found = []
        for b in sorted(self.budgets.values(), key=lambda b: b.budget_id):
            value = actor if b.key == "actor_id" else labels.get(b.key, "")
            if not b.enabled or not value or b.value not in ("", value):
                continue
            if not b.value and self._named(b, value):
                continue
            found.append((b, value))
        return found

    def _named(self, b: Budget, value: str) -> bool:
        return any(
            o.enabled and o.key == b.key and o.period == b.period and o.value == value
            for o in self.budgets.values()
        )

    def _check_budgets(
        self, actor: str, labels: dict[str, str], amount: int, request_id: str, now: datetime
    ) -> None:
        if amount == 0:
            return
        worst = None
        for b, value in self.applying(actor, labels):
            used = self.spend_of(b, value, now)
            if used + amount > b.limit and (worst is None or b.limit - used < worst[2]):
                worst = (b, value, max(b.limit - used, 0), used)
        if worst is None:
            return
        b, value, remaining, used = worst
        key = (b.budget_id, value, period_start(b.period, now))
        first = key not in self.exceeded
        self.exceeded.add(key)
        member = b.key == "actor_id"
        if first:
            fields = {"limit": b.limit, "used": used, "remaining": remaining, "required": amount}
            if member:
                self._event("member.limit_reached", actor_id=actor, **fields)
            else:
                self._event("budget.exceeded", budget_id=b.budget_id, scope_value=value, **fields)
        raise RefusedError(
            "FAILED_PRECONDITION", "MEMBER_LIMIT_REACHED" if member else "BUDGET_EXCEEDED"
        )

    def _spend_snapshot(self, now: datetime) -> dict[tuple[str, str], int]:
        out = {}
        for b in self.budgets.values():
            values = {self.scope_value(h, b.key) for h in self.holds.values()} - {""}
            for v in values:
                if b.value in ("", v):
                    out[(b.budget_id, v)] = self.spend_of(b, v, now)
        return out

    def _budget_crossings(self, now: datetime) -> None:
        """budget.threshold for each warn_at mark a command took a spend across, upward."""
        after = self._spend_snapshot(now)
        for (budget_id, value), spent in sorted(after.items()):
            before = self._spend_before.get((budget_id, value), 0)
            b = self.budgets[budget_id]
            if spent <= before or not b.enabled or (not b.value and self._named(b, value)):
                continue
            for percent in b.warn_at:
                mark = b.limit * percent / 100
                key = (budget_id, value, period_start(b.period, now), percent)
                if before < mark <= spent and key not in self.warned:
                    self.warned.add(key)
                    self._event(
                        "budget.threshold",
                        budget_id=budget_id,
                        scope_value=value,
                        percent=percent,
                        used=spent,
                    )

    def limit_views(self, actors: list[str] | None, now: datetime) -> list[tuple[Any, ...]]:
        """(actor, period, limit, used, remaining) as ListMemberLimits (actors None) or a usage
        row (the member's) show them."""
        members = [b for b in self.budgets.values() if b.key == "actor_id"]
        if actors is None:
            pairs = [
                (b.value, b)
                for b in sorted(members, key=lambda b: (b.value, b.period, b.budget_id))
            ]
        else:
            pairs = [
                (a, b)
                for a in actors
                for b, _ in sorted(self.applying(a, {}), key=lambda bv: bv[0].period)
                if b.key == "actor_id"
            ]
        out = []
        for actor, b in pairs:
            used = self.spend_of(b, actor, now) if actor else 0
            out.append((actor, b.period, b.limit, used, max(b.limit - used, 0)))
        return out

    def standings(self, key: str, value: str, now: datetime) -> list[tuple[Any, ...]]:
        """(budget_id, period, limit, used, remaining) of the budgets of `key` on a usage row."""
        actor, labels = (value, {}) if key == "actor_id" else ("", {key: value})
        return [
            (b.budget_id, b.period, b.limit, used, max(b.limit - used, 0))
            for b, v in self.applying(actor, labels)
            if b.key == key
            for used in [self.spend_of(b, v, now)]
        ]

    def budget_views(self, now: datetime) -> list[tuple[Any, ...]]:
        """(budget_id, key, value, period, limit, warn_at, enabled, used, remaining, values) as
        ListBudgets shows them."""
        out = []
        for b in sorted(self.budgets.values(), key=lambda b: b.budget_id):
            if b.value:
                used = self.spend_of(b, b.value, now)
                values: list[tuple[str, int, int]] = []
            else:
                seen = {self.scope_value(h, b.key) for h in self.holds.values()} - {""}
                spent = {v: self.spend_of(b, v, now) for v in seen}
                values = [(v, u, max(b.limit - u, 0)) for v, u in sorted(spent.items()) if u]
                used = max((u for _, u, _ in values), default=0)
            out.append(
                (b.budget_id, b.key, b.value, b.period, b.limit, b.warn_at, b.enabled, used,
                 max(b.limit - used, 0), values)
            )  # fmt: skip
        return out

    def set_budget(self, b: Budget) -> None:
        self.budgets[b.budget_id] = b
        self._forget(b.budget_id)

    def delete_budget(self, budget_id: str) -> bool:
        found = self.budgets.pop(budget_id, None) is not None
        self._forget(budget_id)
        return found

    def _forget(self, budget_id: str) -> None:
        """A budget set again or deleted starts its spend (and its notices) afresh: setting
        one is not spending, and crosses no warn_at mark."""
        self.warned = {k for k in self.warned if k[0] != budget_id}
        self.exceeded = {k for k in self.exceeded if k[0] != budget_id}
        self._spend_before = self._spend_snapshot(self.now)

    def set_limit(self, actor: str, period: int, limit: int | None) -> None:
        budget_id = member_budget_id(actor, period)
        if limit is None:
            self.delete_budget(budget_id)
        else:
            self.set_budget(Budget(budget_id, "actor_id", actor, period, limit, ()))

    # The runway (DESIGN.md §13).

    def burn(self, now: datetime, days: int) -> int:
        """Charged less refunded on the `days` UTC days ending today."""
        first = now.date() - timedelta(days=days - 1)
        return -sum(
            e.amount
            for e in self.journal
            if e.kind in ("charge", "refund") and first <= e.at.date() <= now.date()
        )

    def runway(self, now: datetime) -> tuple[Fraction | None, Fraction | None]:
        """(days_left, days until a top-up), in exact arithmetic: available spent at the week's
        burn rate in burn order from now, each lot taking what is left of it along when it
        expires; the top-up when what is left falls below the enabled rule's threshold."""
        week = self.burn(now, 7)
        if week <= 0:
            return None, None
        rate = Fraction(week, 7)  # credits a day

        def days_to(at: datetime | None) -> Fraction | None:
            return None if at is None else Fraction(int((at - now).total_seconds()), 86400)

        left = [[Fraction(lt.remaining), days_to(lt.expires_at)] for lt in self._burn_order(now)]
        t = self.topup
        threshold = t.threshold if t is not None and t.enabled else None
        total = sum((x[0] for x in left), Fraction(0))
        topup = Fraction(0) if threshold is not None and total < threshold else None
        at = Fraction(0)
        while left:
            first = left[0]
            ends = [e for _, e in left if e is not None]
            step_to = min([at + first[0] / rate, *ends])
            spent = (step_to - at) * rate
            if threshold is not None and topup is None and total - spent < threshold:
                topup = at + (total - threshold) / rate
            first[0] -= spent
            total -= spent
            at = step_to
            kept = []
            for x in left:
                if x[0] == 0:
                    continue
                if x[1] is not None and x[1] <= at:
                    total -= x[0]
                    if threshold is not None and topup is None and total < threshold:
                        topup = at
                    continue
                kept.append(x)
            left = kept
        return at, topup

    def runway_view(self, now: datetime) -> tuple[Any, ...]:
        """(burn_per_day, burn_per_day_30d, days_left, zero_at, topup_at, runway_days)."""
        days_left, topup = self.runway(now)

        def at(days: Fraction | None) -> datetime | None:
            return None if days is None else now + timedelta(seconds=float(days * 86400))

        return (
            self.burn(now, 7) / 7,
            self.burn(now, 30) / 30,
            None if days_left is None else float(days_left),
            at(days_left),
            at(topup),
            self.runway_days,
        )

    def _check_runway(self, now: datetime) -> None:
        """balance.runway_low once when the runway falls below runway_days; re-armed when it
        is back at or above, or there is no burn to tell."""
        if not self.runway_days:
            return
        days, _ = self.runway(now)
        low = days is not None and days < self.runway_days
        if low and not self.runway_low:
            self.runway_low = True
            self._event("balance.runway_low", runway_days=self.runway_days)
        elif not low and self.runway_low:
            self.runway_low = False

    # Auto top-up.

    def _top_up(self, now: datetime) -> None:
        t = self.topup
        if t is None:
            return
        if t.outstanding and t.requested_at is not None and t.requested_at + TOPUP_LAPSE <= now:
            t.outstanding = ""
        if not t.enabled or t.outstanding or self.available >= t.threshold:
            return
        if t.requested_this_month(now) >= t.monthly_limit:
            return
        t.month_count = t.requested_this_month(now) + 1
        t.month = period_start(MONTH, now)
        t.seq += 1
        t.outstanding = f"topup:{self.id}:{t.seq}"
        t.requested_at = now
        self._event(
            "topup.requested",
            request_id=t.outstanding,
            package=t.package,
            amount=t.amount,
            requested_this_month=t.month_count,
        )

    def topup_view(self, now: datetime) -> tuple[Any, ...]:
        t = self.topup
        if t is None:
            return (False, 0, "", 0, 0, 0, "", 0)
        return (
            t.enabled,
            t.threshold,
            t.package,
            t.amount,
            t.monthly_limit,
            t.failures,
            t.outstanding,
            t.requested_this_month(now),
        )

    # The calls.

    def reserve(
        self,
        request_id: str,
        amount: int,
        actor: str,
        ttl: timedelta,
        operation: str,
        now: datetime,
        labels: dict[str, str] | None = None,
    ) -> Hold:
        labels = labels or {}
        params = ("reserve", amount, actor, ttl, operation, tuple(sorted(labels.items())))
        found = self._claimed(request_id, "reserve", params)
        if found is not None:
            return found
        self._check_budgets(actor, labels, amount, request_id, now)
        if amount > self.available:
            self._alert(REFUSED, 0, amount, request_id)
            raise RefusedError("FAILED_PRECONDITION", "INSUFFICIENT_CREDITS")
        hold = Hold(
            len(self.holds) + 1,
            request_id,
            "reserve",
            amount,
            actor,
            operation,
            params,
            now + ttl,
            dict(labels),
        )
        hold.draws = self._draw(amount, now)
        self.holds[request_id] = hold
        self.held += amount
        return hold

    def charge(
        self,
        request_id: str,
        amount: int,
        actor: str,
        operation: str,
        now: datetime,
        labels: dict[str, str] | None = None,
    ) -> Hold:
        labels = labels or {}
        params = ("charge", amount, actor, operation, tuple(sorted(labels.items())))
        found = self._claimed(request_id, "charge", params)
        if found is not None:
            return found
        self._check_budgets(actor, labels, amount, request_id, now)
        if amount > self.available:
            self._alert(REFUSED, 0, amount, request_id)
            raise RefusedError("FAILED_PRECONDITION", "INSUFFICIENT_CREDITS")
        hold = Hold(
            len(self.holds) + 1,
            request_id,
            "charge",
            amount,
            actor,
            operation,
            params,
            now,
            dict(labels),
        )
        hold.draws = self._draw(amount, now)
        hold.state, hold.charged, hold.finished_at = "committed", amount, now
        hold.commit_params = params
        self.holds[request_id] = hold
        self._charge_entry(hold)
        return hold

    def _hold(self, request_id: str) -> Hold:
        hold = self.holds.get(request_id)
        if hold is None:
            raise RefusedError("NOT_FOUND", "HOLD_NOT_FOUND")
        return hold

    def _expire_hold(self, hold: Hold, now: datetime) -> None:
        self._give_back(hold.draws, hold.operation, hold.request_id, now)
        self.held -= hold.amount
        hold.state, hold.finished_at = "expired", now
        self._event("hold.expired", request_id=hold.request_id)

    def _expire_if_due(self, hold: Hold, now: datetime) -> None:
        if hold.state == "held" and hold.expires_at <= now:
            self._expire_hold(hold, now)

    def commit(self, request_id: str, actual: int, now: datetime) -> Hold:
        hold = self._hold(request_id)
        params = ("commit", actual)
        if hold.kind == "charge":
            raise _reused()
        if hold.state == "committed":
            if hold.commit_params != params:
                raise _reused()
            return hold
        if hold.state == "released":
            raise RefusedError("FAILED_PRECONDITION", "HOLD_RELEASED")
        self._expire_if_due(hold, now)
        late = hold.state == "expired"
        if late:
            draws = self._draw(min(actual, self.available), now)
        elif actual <= hold.amount:
            self.held -= hold.amount
            draws = self._keep(hold, actual, now)
        else:
            draws = hold.draws + self._draw(min(actual - hold.amount, self.available), now)
            self.held -= hold.amount
        hold.draws = draws
        hold.charged = sum(n for _, n in draws)
        hold.shortfall = actual - hold.charged
        hold.state, hold.late, hold.commit_params, hold.finished_at = "committed", late, params, now
        self._charge_entry(hold)
        if hold.shortfall:
            self._event(
                "commit.shortfall", charged=hold.charged, shortfall=hold.shortfall, late=late
            )
        return hold

    def _keep(self, hold: Hold, keep: int, now: datetime) -> list[list[int]]:
        """Keep `keep` of a hold's draws in burn order; the rest goes back to its lots."""
        kept, back, left = [], [], keep
        for lot_id, n in sorted(hold.draws, key=lambda d: self._lot(d[0]).burn_key()):
            take = min(left, n)
            left -= take
            if take:
                kept.append([lot_id, take])
            if n - take:
                back.append([lot_id, n - take])
        self._give_back(back, "", "", now)
        return kept

    def _charge_entry(self, hold: Hold) -> None:
        self.lifetime_used += hold.charged
        self._entry(
            "charge",
            -hold.charged,
            request_id=hold.request_id,
            operation=hold.operation,
            actor=hold.actor,
            shortfall=hold.shortfall,
            late=hold.late,
        )

    def release(self, request_id: str, now: datetime) -> tuple[Hold, int]:
        hold = self._hold(request_id)
        if hold.state == "committed":
            raise RefusedError("FAILED_PRECONDITION", "HOLD_COMMITTED")
        if hold.state == "released":
            return hold, hold.amount
        self._expire_if_due(hold, now)
        if hold.state == "expired":
            return hold, 0
        self._give_back(hold.draws, hold.operation, hold.request_id, now)
        self.held -= hold.amount
        hold.state, hold.finished_at = "released", now
        return hold, hold.amount

    def extend(self, request_id: str, ttl: timedelta, now: datetime) -> Hold:
        hold = self._hold(request_id)
        self._expire_if_due(hold, now)
        if hold.state != "held":
            raise RefusedError("FAILED_PRECONDITION", f"HOLD_{hold.state.upper()}")
        hold.expires_at = now + ttl
        return hold

    def grant(
        self,
        request_id: str,
        amount: int,
        package: str,
        expires_at: datetime | None,
        category: int | None,
        priority: int | None,
        pending: bool,
        now: datetime,
    ) -> tuple[Entry | None, Lot]:
        params = ("grant", amount, package, expires_at, category, priority, pending)
        entry = self._replay(request_id, params, grant=True)
        lot = next((lt for lt in self.lots if lt.request_id == request_id), None)
        if entry is not None:
            assert lot is not None
            return entry, lot
        if lot is not None:
            if lot.params != params:
                raise _reused()
            return None, lot
        if package:
            amount = PACKAGES[package]
            if expires_at is None:
                expires_at = now + PACKAGE_VALIDITY
        if category is None:
            category = PAID if package else MANUAL  # the source is "manual" when not a package
        lot = self._new_lot(
            request_id,
            amount,
            expires_at,
            category,
            50 if priority is None else priority,
            "pending" if pending else "active",
            params,
        )
        t = self.topup
        if t is not None and t.outstanding == request_id:
            t.outstanding, t.failures = "", 0
        if pending:
            self._event("grant.pending", amount=amount, request_id=request_id)
            return None, lot
        self.lifetime_granted += amount
        self._event("credits.granted", amount=amount, request_id=request_id)
        return self._entry("grant", amount, request_id=request_id, params=params), lot

    def _pending_lot(self, request_id: str, to: str) -> Lot:
        lot = next((lt for lt in self.lots if lt.request_id == request_id), None)
        if lot is None or request_id in self.holds:
            raise RefusedError("NOT_FOUND", "GRANT_NOT_FOUND")
        if lot.state == "active":
            raise RefusedError("FAILED_PRECONDITION", "GRANT_NOT_PENDING")
        if lot.state != to and lot.state in ("confirmed", "voided"):
            raise RefusedError("FAILED_PRECONDITION", f"GRANT_{lot.state.upper()}")
        return lot

    def confirm(self, request_id: str, now: datetime) -> Lot:
        lot = self._pending_lot(request_id, "confirmed")
        if lot.state == "confirmed":
            return lot
        lot.state = "confirmed"
        self.lifetime_granted += lot.remaining
        self._event("grant.confirmed", amount=lot.remaining, request_id=request_id)
        self._entry("grant", lot.remaining, request_id=request_id, params=lot.params)
        if lot.expired(now):
            self.expire_lots(now)
        return lot

    def void(self, request_id: str) -> Lot:
        lot = self._pending_lot(request_id, "voided")
        if lot.state == "voided":
            return lot
        lot.state, lot.remaining = "voided", 0
        self._event("grant.voided", amount=lot.amount, request_id=request_id)
        return lot

    def adjust(self, request_id: str, amount: int, reason: str, now: datetime) -> Entry:
        params = ("adjust", amount, reason)
        replay = self._replay(request_id, params)
        if replay is not None:
            return replay
        if amount > 0:
            self._new_lot(request_id, amount, None, MANUAL, 50, "active")
        else:
            if -amount > self.available:
                raise RefusedError("FAILED_PRECONDITION", "INSUFFICIENT_CREDITS")
            self._draw(-amount, now)
        self._event("credits.adjusted", amount=amount, request_id=request_id)
        return self._entry("adjust", amount, request_id=request_id, params=params)

    def refund(self, request_id: str, charge_request_id: str, amount: int, now: datetime) -> Entry:
        params = ("refund", charge_request_id, amount)
        replay = self._replay(request_id, params)
        if replay is not None:
            return replay
        hold = self._hold(charge_request_id)
        if hold.state != "committed":
            raise RefusedError("FAILED_PRECONDITION", "NOT_COMMITTED")
        refundable = hold.charged - hold.refunded
        amount = amount or refundable
        if amount <= 0 or amount > refundable:
            raise RefusedError("FAILED_PRECONDITION", "REFUND_EXCEEDS_CHARGE")
        back, left = [], amount
        for draw in sorted(hold.draws, key=lambda d: self._lot(d[0]).burn_key(), reverse=True):
            if left == 0:
                break
            take = min(left, draw[1])
            if take:
                back.append([draw[0], take])
                draw[1] -= take
                left -= take
        hold.draws = [d for d in hold.draws if d[1] > 0]
        hold.refunded += amount
        self.lifetime_used -= amount
        self._event("credits.refunded", amount=amount, request_id=request_id)
        # The refund's entry first (its balance counts the credits), then what expires of them.
        entry = Entry(
            "refund",
            amount,
            self.balance + amount,
            request_id,
            hold.operation,
            params=params,
            charge_request_id=charge_request_id,
            at=self.now,
        )
        self.journal.append(entry)
        self._give_back_refund(back, hold.operation, request_id, now)
        return entry

    def _give_back_refund(
        self, back: list[list[int]], operation: str, request_id: str, now: datetime
    ) -> None:
        """A refund's credits are in the balance already (its entry): those that land on an
        expired lot leave it again with an EXPIRE entry."""
        self._give_back(back, operation, request_id, now, credit=True)

    def set_thresholds(self, low: int, critical: int, runway_days: int | None = None) -> None:
        self.low, self.critical = low, critical
        if runway_days is not None:
            self.runway_days, self.runway_low = runway_days, False
        # A setting, not a crossing: thresholds now at or below available are armed again.
        if self.available >= low:
            self.notified = 0
        elif self.available >= critical and self.notified == CRITICAL:
            self.notified = LOW

    def set_auto_topup(
        self,
        enabled: bool,
        threshold: int,
        package: str,
        amount: int,
        monthly_limit: int,
        now: datetime,
    ) -> None:
        t = self.topup
        if not enabled and not package and not amount:
            if t is None:
                return
            t.enabled = False
        elif t is None:
            t = self.topup = TopUp(enabled, threshold, package, amount, monthly_limit)
        else:
            if enabled and not t.enabled:
                t.failures = 0
            t.enabled, t.threshold, t.monthly_limit = enabled, threshold, monthly_limit
            t.package, t.amount = package, amount
        self._top_up(now)

    def report_topup_failed(self, request_id: str) -> None:
        t = self.topup
        if t is not None and request_id and t.last_failed == request_id:
            return
        if t is None or not t.outstanding or t.outstanding != request_id:
            raise RefusedError("FAILED_PRECONDITION", "TOPUP_NOT_OUTSTANDING")
        t.outstanding, t.last_failed = "", request_id
        t.failures += 1
        self._event("topup.failed", request_id=request_id, failures=t.failures)
        if t.failures >= 3:
            t.enabled = False
            self._event("topup.disabled", failures=t.failures)

    def sweep(self, now: datetime) -> None:
        """The sweeper's round, one batch: lots past their time expire as the workspace is
        loaded (in burn order, a step of their own), then the sweep expires holds (in id
        order), and notices of lots about to expire follow."""
        self.begin()
        self.expire_lots(now)
        self.end(now, last=False)
        self.begin()
        for hold in sorted(self.holds.values(), key=lambda h: h.hold_id):
            self._expire_if_due(hold, now)
        if any(
            lt.remaining > 0
            and lt.spendable
            and not lt.noticed
            and lt.expires_at is not None
            and lt.expires_at - NOTICE_WINDOW <= now
            for lt in self.lots
        ):
            self._changed = True  # a notice is due: the sweeper writes the workspace
        self.end(now)

    # What the reports show.

    def usage(self, by: str, now: datetime, label_key: str = "") -> list[tuple[Any, ...]]:
        """(key, credits, count, held) rows, as GetUsage by operation, actor or the label
        `label_key` orders them: charged rows by credits, then the values that hold credits or
        have a budget of their own, in key order."""

        def key_of(h: Hold, operation: str) -> str:
            if by == "operation":
                return operation
            return h.actor if by == "actor" else h.labels.get(label_key, "")

        credits: dict[str, int] = {}
        counts: dict[str, int] = {}
        for e in self.journal:
            if e.kind == "charge":
                key = key_of(self.holds[e.request_id], e.operation)
                counts[key] = counts.get(key, 0) + 1
                credits[key] = credits.get(key, 0) - e.amount
            elif e.kind == "refund":
                key = key_of(self.holds[e.charge_request_id], e.operation)
                counts.setdefault(key, 0)
                credits[key] = credits.get(key, 0) - e.amount
        rows = sorted(credits.items(), key=lambda kv: (-kv[1], kv[0]))
        out = [(k, c, counts[k], 0) for k, c in rows]
        if by == "operation":
            return out
        scope = "actor_id" if by == "actor" else label_key
        held: dict[str, int] = {}
        for h in self.holds.values():
            value = self.scope_value(h, scope)
            if h.state == "held" and (value if by == "actor" else scope in h.labels):
                held[value] = held.get(value, 0) + h.amount
        named = {b.value for b in self.budgets.values() if b.key == scope and b.value}
        extra = sorted((set(held) | named) - set(credits))
        return [(k, c, n, held.get(k, 0)) for k, c, n, _ in out] + [
            (k, 0, 0, held.get(k, 0)) for k in extra
        ]
