"""Budgets (DESIGN.md §13): spend limits below the workspace, and what counts against them.

A budget limits what one scope may spend in a period: the scope is a request's `actor_id`
or the value of one of its labels (`project`, `team`, `api_key`, ...), either one value or,
with no value given, every value of that key on its own (a default). A budget's spend in its
period is what its scope was charged (less refunds) plus what it holds now; a reserve or a
charge that would take any budget it falls under past its limit is refused, in the
transaction of the hold, so racing reserves never exceed one.

Which budgets apply: every enabled budget whose scope the request matches, except that a
budget naming a value replaces the default budget of the same key and period for that value
(a member's own limit replaces the default member limit, as member limits always did).
Member limits (DESIGN.md §10) are budgets of the `actor_id` key that SetMemberLimit keeps
(their ids are `member:<actor or *>:<period>`): both calls see the same budgets.

The spend is kept per budget and value (BudgetSpend), updated by the rules as holds are
taken, committed, released, expired and refunded, and started from the holds and charges
already there when a budget is set (storage does that).
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta

from meter.ledger.model import Period

ACTOR_KEY = "actor_id"
MEMBER_PREFIX = "member:"
DEFAULT_WARN_AT = (80,)
MAX_BUDGETS = 100  # per workspace: each is checked on every hold of the workspace

_DAY = timedelta(days=1)


def period_start(period: Period, at: datetime) -> datetime:
    """The start of the UTC calendar day, week (from Monday) or month that holds `at`; the
    beginning of time for a total (it never resets)."""
    if period is Period.TOTAL:
        return datetime.min.replace(tzinfo=UTC)
    day = at.astimezone(UTC).replace(hour=0, minute=0, second=0, microsecond=0)
    if period is Period.DAY:
        return day
    if period is Period.WEEK:
        return day - day.weekday() * _DAY
    return day.replace(day=1)


def period_end(period: Period, at: datetime) -> datetime | None:
    """When the period that holds `at` ends (None: a total never does)."""
    if period is Period.TOTAL:
        return None
    start = period_start(period, at)
    if period is Period.DAY:
        return start + _DAY
    if period is Period.WEEK:
        return start + 7 * _DAY
    return (start + 32 * _DAY).replace(day=1)


def member_budget_id(actor_id: str, period: Period) -> str:
    """The budget SetMemberLimit keeps for a member ('' = every member) and period."""
    return f"{MEMBER_PREFIX}{actor_id or '*'}:{period.name.lower()}"


@dataclass(frozen=True, slots=True)
class Budget:
    budget_id: str
    scope_key: str  # ACTOR_KEY or a label key
    scope_value: str  # '' = every value of the key, each its own budget of this size
    period: Period
    limit: int
    warn_at: tuple[int, ...] = DEFAULT_WARN_AT  # percentages of the limit, ascending
    enabled: bool = True

    @property
    def member(self) -> bool:
        """A member limit (DESIGN.md §10): refused as MEMBER_LIMIT_REACHED."""
        return self.scope_key == ACTOR_KEY

    def value_of(self, actor_id: str, labels: Mapping[str, str]) -> str:
        """The scope value a request with this actor and labels has for this budget's key
        ('' when it has none: the budget does not govern it)."""
        return actor_id if self.scope_key == ACTOR_KEY else labels.get(self.scope_key, "")


@dataclass(slots=True)
class BudgetSpend:
    """One budget's spend for one value: `held` now, `used` (charged less refunds) in the
    period that starts at `period`; `warned` has bit i set once warn_at[i] was crossed in that
    period, `exceeded` once a refusal's event was written in it."""

    budget_id: str
    value: str
    held: int = 0
    used: int = 0
    period: datetime | None = None
    warned: int = 0
    exceeded: bool = False

    def roll(self, budget: Budget, now: datetime) -> None:
        """Move to the period of `now`: a later one starts from nothing charged."""
        start = period_start(budget.period, now)
        if self.period != start:
            if self.period is not None and start > self.period:
                self.used, self.warned, self.exceeded = 0, 0, False
            self.period = start

    def spent(self) -> int:
        return self.used + self.held


@dataclass(frozen=True, slots=True)
class Breach:
    """A reserve or charge that would take a budget past its limit."""

    budget: Budget
    value: str
    used: int
    resets_at: datetime | None

    @property
    def remaining(self) -> int:
        return max(self.budget.limit - self.used, 0)


@dataclass(frozen=True, slots=True)
class Crossing:
    """A budget's spend crossed one of its warn_at percentages upward."""

    budget: Budget
    value: str
    percent: int
    used: int


class Budgets:
    """A workspace's budgets, and the spend of the (budget, value) pairs a batch concerns."""

    __slots__ = ("_before", "budgets", "dirty", "spend")

    def __init__(
        self, budgets: Sequence[Budget], spend: Mapping[tuple[str, str], BudgetSpend]
    ) -> None:
        self.budgets = list(budgets)
        self.spend = dict(spend)  # (budget_id, value) -> its spend
        self.dirty: dict[tuple[str, str], BudgetSpend] = {}  # to write back
        # What the (budget, value) pairs the command in progress moved had spent before it.
        self._before: dict[tuple[str, str], tuple[Budget, int]] = {}

    def applying(self, actor_id: str, labels: Mapping[str, str]) -> Iterator[tuple[Budget, str]]:
        """The enabled budgets a request falls under, each with its value."""
        named: set[tuple[str, str, Period]] = set()
        found: list[tuple[Budget, str]] = []
        for b in self.budgets:
            if not b.enabled:
                continue
            value = b.value_of(actor_id, labels)
            if not value:
                continue
            if b.scope_value == value:
                named.add((b.scope_key, value, b.period))
                found.append((b, value))
            elif not b.scope_value:
                found.append((b, value))
        for b, value in found:
            if b.scope_value or (b.scope_key, value, b.period) not in named:
                yield b, value

    def counted(self, actor_id: str, labels: Mapping[str, str]) -> Iterator[tuple[Budget, str]]:
        """Every budget a hold of this actor and labels counts against, enabled or not (a
        disabled budget keeps its spend, for when it is enabled again)."""
        for b in self.budgets:
            value = b.value_of(actor_id, labels)
            if value and b.scope_value in ("", value):
                yield b, value

    def breach(
        self, actor_id: str, labels: Mapping[str, str], amount: int, now: datetime
    ) -> Breach | None:
        """The budget with the least room among those `amount` more would take past their
        limit; changes nothing. Nothing (a free operation) exceeds no budget."""
        if amount == 0:
            return None
        worst: Breach | None = None
        for b, value in self.applying(actor_id, labels):
            used = self._current(b, value, now, keep=False).spent()
            if used + amount > b.limit:
                found = Breach(b, value, used, period_end(b.period, now))
                if worst is None or found.remaining < worst.remaining:
                    worst = found
        return worst

    def first_refusal(self, breach: Breach, now: datetime) -> bool:
        """Whether this period's refusal event of the breached budget and value is still to
        write; marks it written."""
        spend = self._current(breach.budget, breach.value, now)
        if spend.exceeded:
            return False
        spend.exceeded = True
        return True

    def hold(self, actor_id: str, labels: Mapping[str, str], delta: int, now: datetime) -> None:
        """A hold of `delta` credits taken (or given back, negative)."""
        self._move(actor_id, labels, delta, 0, now)

    def charge(self, actor_id: str, labels: Mapping[str, str], amount: int, now: datetime) -> None:
        self._move(actor_id, labels, 0, amount, now)

    def refund(
        self,
        actor_id: str,
        labels: Mapping[str, str],
        amount: int,
        charged_at: datetime | None,
        now: datetime,
    ) -> None:
        """A refund lowers the spend of the periods its charge was counted in, if current."""
        for b, value in self.counted(actor_id, labels):
            spend = self._current(b, value, now)
            if charged_at is not None and period_start(b.period, charged_at) == spend.period:
                spend.used = max(spend.used - amount, 0)

    def _move(
        self, actor_id: str, labels: Mapping[str, str], held: int, used: int, now: datetime
    ) -> None:
        """Move the spend of every budget the request counts against."""
        for b, value in self.counted(actor_id, labels):
            spend = self._current(b, value, now)
            key = (b.budget_id, value)
            if key not in self._before:
                self._before[key] = (b, spend.spent())
            spend.held = max(spend.held + held, 0)
            spend.used += used

    def settle(self) -> list[Crossing]:
        """End a command: the warn_at marks its moves took a spend across, upward from what it
        was before the command (a commit gives its hold back and then charges: one move of
        the user's, not two), once per period each, of the budgets that apply to the value."""
        crossed: list[Crossing] = []
        for (budget_id, value), (b, before) in self._before.items():
            spend = self.spend[(budget_id, value)]
            after = spend.spent()
            if after <= before or not b.warn_at or not b.enabled or self._overridden(b, value):
                continue
            for i, percent in enumerate(b.warn_at):
                mark = b.limit * percent / 100
                if before < mark <= after and not spend.warned & (1 << i):
                    spend.warned |= 1 << i
                    crossed.append(Crossing(b, value, percent, after))
        self._before.clear()
        return crossed

    def _overridden(self, b: Budget, value: str) -> bool:
        """A default budget replaced for `value` by an enabled budget naming it."""
        return not b.scope_value and any(
            o.enabled
            and o.scope_key == b.scope_key
            and o.period is b.period
            and o.scope_value == value
            for o in self.budgets
        )

    def _current(self, b: Budget, value: str, now: datetime, keep: bool = True) -> BudgetSpend:
        key = (b.budget_id, value)
        spend = self.spend.get(key)
        if spend is None:
            spend = BudgetSpend(b.budget_id, value)
            if not keep:
                spend.period = period_start(b.period, now)
                return spend
            self.spend[key] = spend
        spend.roll(b, now)
        if keep:
            self.dirty[key] = spend
        return spend


@dataclass(frozen=True, slots=True)
class BudgetUse:
    """A budget's standing for one value: its spend in the period and what is left."""

    value: str
    used: int
    remaining: int


@dataclass(frozen=True, slots=True)
class BudgetView:
    """A budget as ListBudgets shows it. For one value, `used` and `remaining` are its; for a
    default budget, `values` lists each value with spend in the period (`used` is the most
    any of them used)."""

    workspace_id: str
    budget: Budget
    used: int
    remaining: int
    resets_at: datetime | None
    values: tuple[BudgetUse, ...] = field(default=())


def budget_views(
    workspace_id: str,
    budgets: Sequence[Budget],
    spend: Mapping[tuple[str, str], BudgetSpend],
    now: datetime,
) -> list[BudgetView]:
    """Every budget with its spend now (stored spend of an earlier period counts nothing)."""
    views = []
    for b in sorted(budgets, key=lambda b: b.budget_id):
        start = period_start(b.period, now)
        uses = []
        for (budget_id, value), s in sorted(spend.items()):
            if budget_id != b.budget_id:
                continue
            used = s.held + (s.used if s.period == start else 0)
            if used:
                uses.append(BudgetUse(value, used, max(b.limit - used, 0)))
        if b.scope_value:
            used = next((u.used for u in uses if u.value == b.scope_value), 0)
            uses = []
        else:
            used = max((u.used for u in uses), default=0)
        views.append(
            BudgetView(
                workspace_id,
                b,
                used,
                max(b.limit - used, 0),
                period_end(b.period, now),
                tuple(uses),
            )
        )
    return views


@dataclass(frozen=True, slots=True)
class BudgetStanding:
    """A budget's standing for one value: what a usage row shows of it."""

    budget_id: str
    period: Period
    limit: int
    used: int
    remaining: int
    resets_at: datetime | None


def standings(
    budgets: Sequence[Budget],
    spend: Mapping[tuple[str, str], BudgetSpend],
    now: datetime,
    scope_key: str,
    value: str,
) -> list[BudgetStanding]:
    """The budgets of `scope_key` that apply to `value`, as they stand now."""
    found = Budgets([b for b in budgets if b.scope_key == scope_key], spend)
    actor, labels = (value, {}) if scope_key == ACTOR_KEY else ("", {scope_key: value})
    out = []
    for b, v in found.applying(actor, labels):
        s = spend.get((b.budget_id, v))
        used = (
            0 if s is None else s.held + (s.used if s.period == period_start(b.period, now) else 0)
        )
        out.append(
            BudgetStanding(
                b.budget_id,
                b.period,
                b.limit,
                used,
                max(b.limit - used, 0),
                period_end(b.period, now),
            )
        )
    return out
