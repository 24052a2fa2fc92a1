"""GetUsage's use case: usage grouped by operation, actor, label or time, with the budgets of
each actor or label value (DESIGN.md §10, §13)."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import Protocol

from meter.ledger.budgets import ACTOR_KEY, BudgetStanding
from meter.ledger.policies import MemberLimitView
from meter.ledger.policy_service import PolicyService
from meter.ledger.usage import UsageGrouping, UsageReport


class UsageStore(Protocol):
    async def usage(
        self,
        workspace_id: str,
        grouping: UsageGrouping,
        start: datetime | None,
        end: datetime | None,
        members: Sequence[str] = (),
        label_key: str = "",
    ) -> UsageReport: ...


class UsageService:
    def __init__(self, store: UsageStore, policies: PolicyService) -> None:
        self.store = store
        self.policies = policies

    async def usage(
        self,
        workspace_id: str,
        grouping: UsageGrouping,
        start: datetime | None,
        end: datetime | None,
        label_key: str = "",
    ) -> tuple[
        UsageReport, dict[str, list[MemberLimitView]] | None, dict[str, list[BudgetStanding]]
    ]:
        """The report; by actor, each row's member limits; by actor or label, each row's
        budgets. Values with a budget of their own are listed, charged in the range or not."""
        key = ACTOR_KEY if grouping is UsageGrouping.ACTOR else label_key
        named: list[str] = []
        if grouping in (UsageGrouping.ACTOR, UsageGrouping.LABEL):
            budgets = await self.policies.budgets(workspace_id)
            named = sorted(
                {
                    v.budget.scope_value
                    for v in budgets
                    if v.budget.scope_key == key and v.budget.scope_value
                }
            )
        report = await self.store.usage(workspace_id, grouping, start, end, named, label_key)
        if grouping not in (UsageGrouping.ACTOR, UsageGrouping.LABEL):
            return report, None, {}
        values = [r.key for r in report.rows]
        standings = await self.policies.standings(workspace_id, key, values)
        limits: dict[str, list[MemberLimitView]] | None = None
        if grouping is UsageGrouping.ACTOR:
            limits = {}
            for view in await self.policies.member_limits(workspace_id, values):
                limits.setdefault(view.actor_id, []).append(view)
        return report, limits, standings
