"""The credit-policy RPCs of meter.v1.Meter (DESIGN.md §10): pending grants, member limits
and auto top-up. MeterServicer inherits them."""

from __future__ import annotations

from typing import Any

from meter import errors
from meter.ledger.model import Category
from meter.ledger.policy_service import PolicyService
from meter.rpc import convert
from meter.rpc.handlers import unary
from meterpb.v1 import meter_pb2 as pb


def category(value: int) -> Category | None:
    """A request's CreditCategory: None when unspecified (the default applies).

    Raises: MeterError INVALID on an unknown value."""
    if value == 0:
        return None
    if value not in Category._value2member_map_:
        raise errors.invalid_field("category", "must be PAID, PROMOTIONAL or MANUAL")
    return Category(value)


class PolicyRpcs:
    policies: PolicyService

    @unary
    async def ConfirmGrant(
        self, request: pb.ConfirmGrantRequest, context: Any
    ) -> pb.GrantCreditsResponse:
        cmd = self.policies.build_confirm(
            workspace_id=request.workspace_id,
            request_id=request.request_id,
            actor_id=request.actor_id,
        )
        return convert.grant(cmd.workspace_id, await self.policies.confirm(cmd))

    @unary
    async def VoidGrant(
        self, request: pb.VoidGrantRequest, context: Any
    ) -> pb.GrantCreditsResponse:
        cmd = self.policies.build_void(
            workspace_id=request.workspace_id,
            request_id=request.request_id,
            reason=request.reason,
            actor_id=request.actor_id,
        )
        return convert.grant(cmd.workspace_id, await self.policies.void(cmd))

    @unary
    async def SetMemberLimit(
        self, request: pb.SetMemberLimitRequest, context: Any
    ) -> pb.MemberLimit:
        view = await self.policies.set_member_limit(
            workspace_id=request.workspace_id,
            actor_id=request.actor_id,
            period=request.period,
            limit=request.limit if request.HasField("limit") else None,
        )
        return convert.member_limit(view)

    @unary
    async def ListMemberLimits(
        self, request: pb.ListMemberLimitsRequest, context: Any
    ) -> pb.ListMemberLimitsResponse:
        views = await self.policies.member_limits(request.workspace_id)
        return pb.ListMemberLimitsResponse(limits=[convert.member_limit(v) for v in views])

    @unary
    async def SetBudget(self, request: pb.SetBudgetRequest, context: Any) -> pb.Budget:
        b = request.budget
        view = await self.policies.set_budget(
            workspace_id=request.workspace_id,
            budget_id=b.budget_id,
            scope_key=b.scope_key,
            scope_value=b.scope_value,
            period=b.period,
            limit=b.limit,
            warn_at=list(b.warn_at),
            enabled=b.enabled if b.HasField("enabled") else True,
        )
        return convert.budget(view)

    @unary
    async def DeleteBudget(
        self, request: pb.DeleteBudgetRequest, context: Any
    ) -> pb.DeleteBudgetResponse:
        deleted = await self.policies.delete_budget(
            workspace_id=request.workspace_id, budget_id=request.budget_id
        )
        return pb.DeleteBudgetResponse(deleted=deleted)

    @unary
    async def ListBudgets(
        self, request: pb.ListBudgetsRequest, context: Any
    ) -> pb.ListBudgetsResponse:
        views = await self.policies.budgets(request.workspace_id)
        return pb.ListBudgetsResponse(budgets=[convert.budget(v) for v in views])

    @unary
    async def SetAutoTopUp(self, request: pb.SetAutoTopUpRequest, context: Any) -> pb.AutoTopUp:
        cmd = self.policies.build_set_auto_topup(
            workspace_id=request.workspace_id,
            enabled=request.enabled,
            threshold=request.threshold,
            package=request.package,
            amount=request.amount,
            monthly_limit=request.monthly_limit,
        )
        return convert.auto_topup(await self.policies.set_auto_topup(cmd))

    @unary
    async def GetAutoTopUp(self, request: pb.GetAutoTopUpRequest, context: Any) -> pb.AutoTopUp:
        return convert.auto_topup(await self.policies.auto_topup(request.workspace_id))

    @unary
    async def ReportTopUpFailed(
        self, request: pb.ReportTopUpFailedRequest, context: Any
    ) -> pb.AutoTopUp:
        cmd = self.policies.build_report_topup_failed(
            workspace_id=request.workspace_id, request_id=request.request_id, reason=request.reason
        )
        return convert.auto_topup(await self.policies.report_topup_failed(cmd))
