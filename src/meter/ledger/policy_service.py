"""Credit-policy use cases (DESIGN.md §10, §13): pending grants, budgets (member limits among
them), auto top-up.

Confirmations, voids and the auto top-up rule are ledger commands like any other: they run in
the batcher's transactions under the workspace's lock, with their events. Budgets are
settings written in their own transaction (meter.storage.policies_repo).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol

from meter.catalog.service import CatalogService
from meter.ledger.budgets import (
    ACTOR_KEY,
    DEFAULT_WARN_AT,
    MEMBER_PREFIX,
    Budget,
    BudgetStanding,
    BudgetView,
    member_budget_id,
)
from meter.ledger.commands import (
    ConfirmGrantCmd,
    ReportTopUpFailedCmd,
    SetAutoTopUpCmd,
    VoidGrantCmd,
)
from meter.ledger.model import EntryOutcome, Period, TopUpView
from meter.ledger.policies import MemberLimitView
from meter.ledger.service import LedgerService, _as
from meter.ledger.validation import LABEL_KEY_RE, MAX_LABEL_VALUE, Violations

MAX_MONTHLY_TOPUPS = 1000


class PolicyStore(Protocol):
    async def set_member_limit(
        self, workspace_id: str, actor_id: str, period: Period, limit: int | None
    ) -> MemberLimitView: ...
    async def member_limits(
        self, workspace_id: str, actors: list[str] | None = None
    ) -> list[MemberLimitView]: ...
    async def set_budget(self, workspace_id: str, budget: Budget) -> BudgetView: ...
    async def delete_budget(self, workspace_id: str, budget_id: str) -> bool: ...
    async def budgets(self, workspace_id: str) -> list[BudgetView]: ...
    async def standings(
        self, workspace_id: str, scope_key: str, values: Sequence[str]
    ) -> dict[str, list[BudgetStanding]]: ...
    async def auto_topup(self, workspace_id: str) -> TopUpView: ...


class PolicyService:
    def __init__(self, ledger: LedgerService, store: PolicyStore, catalog: CatalogService) -> None:
        self.ledger = ledger
        self.store = store
        self.catalog = catalog

    # Pending grants.

    def build_confirm(
        self, *, workspace_id: str, request_id: str, actor_id: str
    ) -> ConfirmGrantCmd:
        v = _ids(workspace_id, request_id)
        v.actor("actor_id", actor_id)
        v.raise_if_any()
        return ConfirmGrantCmd(workspace_id, request_id, actor_id)

    def build_void(
        self, *, workspace_id: str, request_id: str, reason: str, actor_id: str
    ) -> VoidGrantCmd:
        v = _ids(workspace_id, request_id)
        v.actor("actor_id", actor_id)
        v.text("reason", reason)
        v.raise_if_any()
        return VoidGrantCmd(workspace_id, request_id, reason, actor_id)

    async def confirm(self, cmd: ConfirmGrantCmd) -> EntryOutcome:
        return _as(EntryOutcome, await self.ledger.execute(cmd))

    async def void(self, cmd: VoidGrantCmd) -> EntryOutcome:
        return _as(EntryOutcome, await self.ledger.execute(cmd))

    # Member limits.

    async def set_member_limit(
        self, *, workspace_id: str, actor_id: str, period: int, limit: int | None
    ) -> MemberLimitView:
        """Raises: MeterError INVALID naming the field, WORKSPACE_NOT_FOUND."""
        v = Violations()
        v.id("workspace_id", workspace_id)
        v.actor("actor_id", actor_id)
        _period(v, "period", period)
        if limit is not None:
            v.credits("limit", limit)
        v.raise_if_any()
        return await self.store.set_member_limit(workspace_id, actor_id, Period(period), limit)

    # Budgets (DESIGN.md §13).

    async def set_budget(
        self,
        *,
        workspace_id: str,
        budget_id: str,
        scope_key: str,
        scope_value: str,
        period: int,
        limit: int,
        warn_at: list[int],
        enabled: bool,
    ) -> BudgetView:
        """Create or replace a budget.

        Raises: MeterError INVALID naming each bad field, WORKSPACE_NOT_FOUND.
        """
        v = _workspace(workspace_id)
        v.id("budget.budget_id", budget_id)
        if scope_key == ACTOR_KEY:
            v.actor("budget.scope_value", scope_value)
        elif not scope_key:
            v.add("budget.scope_key", "required: actor_id or a label key")
        elif not LABEL_KEY_RE.fullmatch(scope_key):
            v.add(
                "budget.scope_key",
                "actor_id, or a label key: 1-63 characters of [a-z0-9_.-], starting with a letter",
            )
        else:
            v.text("budget.scope_value", scope_value, limit=MAX_LABEL_VALUE)
        _period(v, "budget.period", period)
        v.credits("budget.limit", limit)
        if any(not 1 <= w <= 100 for w in warn_at):
            v.add("budget.warn_at", "percentages between 1 and 100")
        if budget_id.startswith(MEMBER_PREFIX) and not v and period in Period._value2member_map_:
            member = member_budget_id(scope_value, Period(period))
            if scope_key != ACTOR_KEY or budget_id != member:
                v.add(
                    "budget.budget_id",
                    f"{MEMBER_PREFIX!r} names a member limit: {member!r} for this scope",
                )
        v.raise_if_any()
        budget = Budget(
            budget_id,
            scope_key,
            scope_value,
            Period(period),
            limit,
            tuple(sorted(set(warn_at))) if warn_at else DEFAULT_WARN_AT,
            enabled,
        )
        return await self.store.set_budget(workspace_id, budget)

    async def delete_budget(self, *, workspace_id: str, budget_id: str) -> bool:
        v = _workspace(workspace_id)
        v.id("budget_id", budget_id)
        v.raise_if_any()
        return await self.store.delete_budget(workspace_id, budget_id)

    async def budgets(self, workspace_id: str) -> list[BudgetView]:
        _workspace(workspace_id).raise_if_any()
        return await self.store.budgets(workspace_id)

    async def standings(
        self, workspace_id: str, scope_key: str, values: Sequence[str]
    ) -> dict[str, list[BudgetStanding]]:
        """By value, the budgets of `scope_key` that apply to it (usage rows show them)."""
        return await self.store.standings(workspace_id, scope_key, values)

    async def member_limits(
        self, workspace_id: str, actors: list[str] | None = None
    ) -> list[MemberLimitView]:
        """Every limit set, or (with `actors`) the limits that apply to each of them."""
        _workspace(workspace_id).raise_if_any()
        return await self.store.member_limits(workspace_id, actors)

    # Auto top-up.

    def build_set_auto_topup(
        self,
        *,
        workspace_id: str,
        enabled: bool,
        threshold: int,
        package: str,
        amount: int,
        monthly_limit: int,
    ) -> SetAutoTopUpCmd:
        """Raises: MeterError INVALID naming the field, PACKAGE_NOT_FOUND."""
        v = _workspace(workspace_id)
        if not enabled and not package and not amount and not threshold and not monthly_limit:
            v.raise_if_any()  # disable, and keep the rule as it is
            return SetAutoTopUpCmd(workspace_id, False, 0, "", 0, 0)
        v.credits("threshold", threshold, positive=True)
        if package and amount:
            v.add("amount", "give either amount or package, not both")
        elif not package and not amount:
            v.add("package", "give package or amount")
        elif amount:
            v.credits("amount", amount, positive=True)
        if not 1 <= monthly_limit <= MAX_MONTHLY_TOPUPS:
            v.add("monthly_limit", f"must be between 1 and {MAX_MONTHLY_TOPUPS}")
        v.raise_if_any()
        if package:
            package = self.catalog.package(package).name  # PACKAGE_NOT_FOUND
        return SetAutoTopUpCmd(workspace_id, enabled, threshold, package, amount, monthly_limit)

    def build_report_topup_failed(
        self, *, workspace_id: str, request_id: str, reason: str
    ) -> ReportTopUpFailedCmd:
        v = _workspace(workspace_id)
        if not request_id or len(request_id) > 300:
            v.add("request_id", "must be the topup.requested event's request_id")
        v.text("reason", reason)
        v.raise_if_any()
        return ReportTopUpFailedCmd(workspace_id, request_id, reason)

    async def set_auto_topup(self, cmd: SetAutoTopUpCmd) -> TopUpView:
        return _as(TopUpView, await self.ledger.execute(cmd))

    async def report_topup_failed(self, cmd: ReportTopUpFailedCmd) -> TopUpView:
        return _as(TopUpView, await self.ledger.execute(cmd))

    async def auto_topup(self, workspace_id: str) -> TopUpView:
        _workspace(workspace_id).raise_if_any()
        return await self.store.auto_topup(workspace_id)


def _period(v: Violations, field: str, period: int) -> None:
    if period not in Period._value2member_map_:
        v.add(field, "must be LIMIT_PERIOD_DAY, _WEEK, _MONTH or _TOTAL")


def _workspace(workspace_id: str) -> Violations:
    v = Violations()
    v.id("workspace_id", workspace_id)
    return v


def _ids(workspace_id: str, request_id: str) -> Violations:
    v = _workspace(workspace_id)
    v.id("request_id", request_id)
    return v
