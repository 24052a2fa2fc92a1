"""Grants, corrections (adjust, refund) and the credit policies (member limits, budgets, auto
top-up, alert thresholds)."""

from __future__ import annotations

from collections.abc import Iterable
from datetime import datetime

from meter.client import requests as rq
from meter.client._async.transport import AsyncTransport
from meterpb.v1 import meter_pb2 as pb


class AsyncCreditCalls(AsyncTransport):
    """Grants, corrections and credit policies."""

    async def grant(
        self,
        workspace: str,
        request_id: str,
        *,
        package: str | None = None,
        amount: int | None = None,
        expires_at: datetime | None = None,
        source: str = "",
        actor: str = "",
        labels: rq.Labels | None = None,
        category: str | int = "",
        priority: int | None = None,
        pending: bool = False,
    ) -> pb.GrantCreditsResponse:
        """Add credits by `package` name or explicit `amount`; `request_id` = payment id.

        `category` (paid, promotional, manual) and `priority` (0-100, lower burns first)
        place the lot in the burn order; `pending` records it unspendable until
        `confirm_grant` (a payment still processing).

        Raises:
            PackageNotFound, RequestIdReused, InvalidArgument.
            ValueError: both a package and an amount, or neither.
        """
        if (package is None) == (amount is None):
            raise ValueError("grant takes a package or an amount, exactly one")
        request = pb.GrantCreditsRequest(
            workspace_id=workspace,
            request_id=request_id,
            package=package or "",
            amount=amount or 0,
            source=source,
            actor_id=actor,
            labels=dict(labels or {}),
            category=rq.credit_category(category),
            priority=priority,
            pending=pending,
        )
        if expires_at is not None:
            request.expires_at.CopyFrom(rq.timestamp(expires_at))
        return await self._call(self._meter.GrantCredits, request)

    async def adjust(
        self, workspace: str, request_id: str, amount: int, reason: str, *, actor: str = ""
    ) -> pb.AdjustCreditsResponse:
        """An administrator's signed correction; never below zero.

        Raises:
            InsufficientCredits: a negative adjustment larger than what is available.
        """
        request = pb.AdjustCreditsRequest(
            workspace_id=workspace, request_id=request_id, amount=amount, reason=reason,
            actor_id=actor,
        )  # fmt: skip
        return await self._call(self._meter.AdjustCredits, request)

    async def refund(
        self,
        workspace: str,
        request_id: str,
        charge_request_id: str,
        *,
        amount: int = 0,
        reason: str = "",
        actor: str = "",
    ) -> pb.RefundResponse:
        """Give back `amount` (0: all that is left) of the charge `charge_request_id`."""
        request = pb.RefundRequest(
            workspace_id=workspace, request_id=request_id, charge_request_id=charge_request_id,
            amount=amount, reason=reason, actor_id=actor,
        )  # fmt: skip
        return await self._call(self._meter.Refund, request)

    # Credit policies.

    async def confirm_grant(
        self, workspace: str, request_id: str, *, actor: str = ""
    ) -> pb.GrantCreditsResponse:
        """Make the pending grant `request_id` spendable. Idempotent.

        Raises:
            GrantNotFound, FailedPrecondition (GRANT_VOIDED, GRANT_NOT_PENDING).
        """
        request = pb.ConfirmGrantRequest(
            workspace_id=workspace, request_id=request_id, actor_id=actor
        )
        return await self._call(self._meter.ConfirmGrant, request)

    async def void_grant(
        self, workspace: str, request_id: str, *, reason: str = "", actor: str = ""
    ) -> pb.GrantCreditsResponse:
        """Remove the pending grant `request_id`. Idempotent.

        Raises:
            GrantNotFound, FailedPrecondition (GRANT_CONFIRMED, GRANT_NOT_PENDING).
        """
        request = pb.VoidGrantRequest(
            workspace_id=workspace, request_id=request_id, reason=reason, actor_id=actor
        )
        return await self._call(self._meter.VoidGrant, request)

    async def set_member_limit(
        self, workspace: str, actor: str, period: str | int, limit: int | None
    ) -> pb.MemberLimit:
        """Limit what `actor` ("" = every member) may spend per day, week or month; a limit of
        None removes it. A member over its limit gets MemberLimitReached. A member limit is a
        budget of the actor_id key: `budgets` lists it too."""
        request = pb.SetMemberLimitRequest(
            workspace_id=workspace, actor_id=actor, period=rq.limit_period(period), limit=limit
        )
        return await self._call(self._meter.SetMemberLimit, request)

    async def member_limits(self, workspace: str) -> list[pb.MemberLimit]:
        """As `MeterClient.member_limits`."""
        request = pb.ListMemberLimitsRequest(workspace_id=workspace)
        return list((await self._call(self._meter.ListMemberLimits, request)).limits)

    async def set_budget(
        self,
        workspace: str,
        budget_id: str,
        *,
        key: str,
        value: str = "",
        period: str | int,
        limit: int,
        warn_at: Iterable[int] = (),
        enabled: bool = True,
    ) -> pb.Budget:
        """Create or replace the budget `budget_id`: what the requests whose `key` (actor_id,
        or a label key such as project or team) is `value` may spend per day, week, month or
        in total. Without a value, every value of the key gets a budget of this size (one
        naming a value replaces it for that value). `warn_at` (percentages; none: 80) mark
        the budget.threshold events. Past a limit Reserve and Charge raise BudgetExceeded
        (MemberLimitReached for the actor_id key).

        Raises:
            InvalidArgument: naming each bad field (budget.scope_key, budget.limit, ...).
        """
        budget = pb.Budget(
            budget_id=budget_id,
            scope_key=key,
            scope_value=value,
            period=rq.limit_period(period),
            limit=limit,
            warn_at=list(warn_at),
            enabled=enabled,
        )
        request = pb.SetBudgetRequest(workspace_id=workspace, budget=budget)
        return await self._call(self._meter.SetBudget, request)

    async def delete_budget(self, workspace: str, budget_id: str) -> bool:
        """Remove the budget `budget_id`; False when there was none (nothing changed)."""
        request = pb.DeleteBudgetRequest(workspace_id=workspace, budget_id=budget_id)
        return (await self._call(self._meter.DeleteBudget, request)).deleted

    async def budgets(self, workspace: str) -> list[pb.Budget]:
        """The workspace's budgets (member limits included), each with what it has used this
        period (charged plus held), what is left and when it resets; a default budget with
        each value's standing in `values`."""
        request = pb.ListBudgetsRequest(workspace_id=workspace)
        return list((await self._call(self._meter.ListBudgets, request)).budgets)

    async def set_alert_thresholds(
        self, workspace: str, *, low: int, critical: int, runway_days: int | None = None
    ) -> pb.AlertThresholds:
        """The balance is LOW below `low` available credits and CRITICAL below `critical`;
        balance.runway_low fires when the credits would run out within `runway_days` days (0:
        never; None: as it is, 7 by default).

        Raises:
            InvalidArgument: critical above low, a negative amount, runway_days past 3650.
        """
        request = pb.SetAlertThresholdsRequest(
            workspace_id=workspace, low=low, critical=critical, runway_days=runway_days
        )
        return await self._call(self._meter.SetAlertThresholds, request)

    async def set_auto_topup(
        self,
        workspace: str,
        *,
        enabled: bool = True,
        threshold: int = 0,
        package: str | None = None,
        amount: int | None = None,
        monthly_limit: int = 0,
    ) -> pb.AutoTopUp:
        """Below `threshold`, a topup.requested event asks the payment handler to buy
        `package` (or `amount`), at most `monthly_limit` times a month. enabled=False alone
        disables the rule and keeps it."""
        if enabled and (package is None) == (amount is None):
            raise ValueError("an auto top-up buys a package or an amount, exactly one")
        request = pb.SetAutoTopUpRequest(
            workspace_id=workspace,
            enabled=enabled,
            threshold=threshold,
            package=package or "",
            amount=amount or 0,
            monthly_limit=monthly_limit,
        )
        return await self._call(self._meter.SetAutoTopUp, request)

    async def auto_topup(self, workspace: str) -> pb.AutoTopUp:
        """As `MeterClient.auto_topup`."""
        request = pb.GetAutoTopUpRequest(workspace_id=workspace)
        return await self._call(self._meter.GetAutoTopUp, request)

    async def report_topup_failed(
        self, workspace: str, request_id: str, reason: str = ""
    ) -> pb.AutoTopUp:
        """The payment for top-up request `request_id` failed; three in a row disable the rule."""
        request = pb.ReportTopUpFailedRequest(
            workspace_id=workspace, request_id=request_id, reason=reason
        )
        return await self._call(self._meter.ReportTopUpFailed, request)
