"""Each role against each RPC: what DESIGN.md §6 allows gets through, the rest is refused.

The expected matrix is written out here from DESIGN.md, not derived from meter.rpc.auth's
table: it is the oracle that table is checked against.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

import grpc
import pytest

from meter.rpc.auth import RULES
from meterpb.v1 import catalog_pb2 as cpb
from meterpb.v1 import catalog_pb2_grpc, events_pb2_grpc, meter_pb2_grpc
from meterpb.v1 import events_pb2 as epb
from meterpb.v1 import meter_pb2 as pb
from tests.security.conftest import Mint, bearer
from tests.support import failure, rid

# DESIGN.md §6: worker (reserve/commit/release/extend/charge/stream, balance), planner
# (catalog, quotes, estimates, balance), app (balance, watch, history, usage; alerts are
# part of what it watches), billing (grants), admin (everything).
ALLOWED: dict[str, set[str]] = {
    "worker": {"Reserve", "Commit", "Release", "Extend", "Charge", "Stream", "GetBalance"},
    "planner": {
        "ListOperations",
        "GetOperation",
        "Quote",
        "EstimateCampaign",
        "ListPackages",
        "GetBalance",
    },
    "app": {
        "GetBalance",
        "WatchBalance",
        "ListTransactions",
        "GetUsage",
        "ListAlerts",
        "ListEvents",
        "ExportJournal",
        "ListMemberLimits",
        "ListBudgets",
        "GetAutoTopUp",
    },
    # DESIGN.md §9: app and billing may ListEvents; admin manages endpoints. §10: billing
    # grants, confirms and voids, and runs auto top-up; admin sets member limits and (§13)
    # budgets, which the app may list. §16: the
    # journal's export goes where the event feed goes.
    "billing": {
        "GrantCredits",
        "ListEvents",
        "ExportJournal",
        "ConfirmGrant",
        "VoidGrant",
        "SetAutoTopUp",
        "GetAutoTopUp",
        "ReportTopUpFailed",
    },
}

Request = Callable[[str], Any]
METER: dict[str, Request] = {
    "Reserve": lambda ws: pb.ReserveRequest(workspace_id=ws, request_id=rid(), amount=1),
    "Commit": lambda ws: pb.CommitRequest(workspace_id=ws, request_id=rid(), amount=1),
    "Release": lambda ws: pb.ReleaseRequest(workspace_id=ws, request_id=rid()),
    "Extend": lambda ws: pb.ExtendRequest(workspace_id=ws, request_id=rid()),
    "Charge": lambda ws: pb.ChargeRequest(workspace_id=ws, request_id=rid(), amount=1),
    "Stream": lambda ws: pb.StreamRequest(
        items=[pb.StreamItem(charge=pb.ChargeRequest(workspace_id=ws, request_id=rid(), amount=1))]
    ),
    "GetBalance": lambda ws: pb.GetBalanceRequest(workspace_id=ws),
    "WatchBalance": lambda ws: pb.WatchBalanceRequest(workspace_id=ws),
    "ListTransactions": lambda ws: pb.ListTransactionsRequest(workspace_id=ws),
    "GetUsage": lambda ws: pb.GetUsageRequest(workspace_id=ws, group_by=pb.USAGE_GROUPING_DAY),
    "ListHolds": lambda ws: pb.ListHoldsRequest(workspace_id=ws),
    "ListAlerts": lambda ws: pb.ListAlertsRequest(workspace_id=ws),
    "GrantCredits": lambda ws: pb.GrantCreditsRequest(workspace_id=ws, request_id=rid(), amount=5),
    "Refund": lambda ws: pb.RefundRequest(
        workspace_id=ws, request_id=rid(), charge_request_id="nope", amount=1
    ),
    "AdjustCredits": lambda ws: pb.AdjustCreditsRequest(
        workspace_id=ws, request_id=rid(), amount=1, reason="test"
    ),
    "SetAlertThresholds": lambda ws: pb.SetAlertThresholdsRequest(
        workspace_id=ws, low=50, critical=5
    ),
    "Audit": lambda ws: pb.AuditRequest(workspace_id=ws),
    # Refused past the guard (no such grant, no outstanding top-up): nothing changes.
    "ConfirmGrant": lambda ws: pb.ConfirmGrantRequest(workspace_id=ws, request_id="nope"),
    "VoidGrant": lambda ws: pb.VoidGrantRequest(workspace_id=ws, request_id="nope"),
    "SetMemberLimit": lambda ws: pb.SetMemberLimitRequest(
        workspace_id=ws, actor_id="ana", period=pb.LIMIT_PERIOD_DAY, limit=1000
    ),
    "ListMemberLimits": lambda ws: pb.ListMemberLimitsRequest(workspace_id=ws),
    # Refused as bad input once past the guard (no budget id), and a budget there is not.
    "SetBudget": lambda ws: pb.SetBudgetRequest(
        workspace_id=ws, budget=pb.Budget(scope_key="project", limit=5)
    ),
    "DeleteBudget": lambda ws: pb.DeleteBudgetRequest(workspace_id=ws, budget_id="nope"),
    "ListBudgets": lambda ws: pb.ListBudgetsRequest(workspace_id=ws),
    "SetAutoTopUp": lambda ws: pb.SetAutoTopUpRequest(workspace_id=ws, enabled=False),
    "GetAutoTopUp": lambda ws: pb.GetAutoTopUpRequest(workspace_id=ws),
    "ReportTopUpFailed": lambda ws: pb.ReportTopUpFailedRequest(workspace_id=ws, request_id="nope"),
    "ExportJournal": lambda ws: pb.ExportJournalRequest(page_size=1),
}
CATALOG: dict[str, Request] = {
    "ListOperations": lambda ws: cpb.ListOperationsRequest(),
    "GetOperation": lambda ws: cpb.GetOperationRequest(operation="post.generate"),
    "Quote": lambda ws: cpb.QuoteRequest(operation="post.generate"),
    "EstimateCampaign": lambda ws: cpb.EstimateCampaignRequest(
        platforms=1, duration_days=7, workspace_id=ws
    ),
    "ListPackages": lambda ws: cpb.ListPackagesRequest(),
    "PublishCatalog": lambda ws: cpb.PublishCatalogRequest(document="not = [valid"),
}
NOPE = "ep_nope"
EVENTS: dict[str, Request] = {
    "ListEvents": lambda ws: epb.ListEventsRequest(workspace_id=ws),
    # Refused as bad input once past the guard: nothing is created.
    "CreateWebhookEndpoint": lambda ws: epb.CreateWebhookEndpointRequest(url="ftp://x"),
    "ListWebhookEndpoints": lambda ws: epb.ListWebhookEndpointsRequest(),
    "GetWebhookEndpoint": lambda ws: epb.GetWebhookEndpointRequest(endpoint_id=NOPE),
    "UpdateWebhookEndpoint": lambda ws: epb.UpdateWebhookEndpointRequest(
        endpoint=epb.WebhookEndpoint(endpoint_id=NOPE, enabled=False)
    ),
    "DeleteWebhookEndpoint": lambda ws: epb.DeleteWebhookEndpointRequest(endpoint_id=NOPE),
    "RotateWebhookSecret": lambda ws: epb.RotateWebhookSecretRequest(endpoint_id=NOPE),
    "ListDeliveries": lambda ws: epb.ListDeliveriesRequest(endpoint_id=NOPE),
    "ReplayEvents": lambda ws: epb.ReplayEventsRequest(endpoint_id=NOPE, event_ids=["evt_1_x"]),
    "SendTestEvent": lambda ws: epb.SendTestEventRequest(endpoint_id=NOPE),
}
ALL = {**METER, **CATALOG, **EVENTS}
ROLES = ("worker", "planner", "app", "billing", "admin")


async def call(channel: grpc.aio.Channel, method: str, request: Any, token: str) -> grpc.StatusCode:
    """The status of one call (OK or the refusal), whatever kind of RPC it is."""
    md = bearer(token)
    try:
        if method in CATALOG:
            await getattr(catalog_pb2_grpc.CatalogStub(channel), method)(
                request, metadata=md, timeout=5
            )
        elif method in EVENTS:
            await getattr(events_pb2_grpc.EventsStub(channel), method)(
                request, metadata=md, timeout=5
            )
        elif method == "Stream":
            stream = meter_pb2_grpc.MeterStub(channel).Stream(metadata=md, timeout=5)
            await stream.write(request)
            await stream.done_writing()
            async for _ in stream:
                pass
        elif method == "WatchBalance":
            watch = meter_pb2_grpc.MeterStub(channel).WatchBalance(request, metadata=md, timeout=5)
            await watch.read()
            watch.cancel()
        else:
            await getattr(meter_pb2_grpc.MeterStub(channel), method)(
                request, metadata=md, timeout=5
            )
    except grpc.aio.AioRpcError as e:
        f = failure(e)
        if f.code is grpc.StatusCode.PERMISSION_DENIED:
            assert "ROLE_NOT_ALLOWED" == f.reason
        return f.code
    return grpc.StatusCode.OK


@pytest.fixture(scope="module")
async def tokens(mint: Mint) -> dict[str, str]:
    return {role: await mint(role) for role in ROLES}


def test_every_rpc_of_every_service_is_in_the_permission_table():
    assert set(ALL) == {m.rsplit("/", 1)[-1] for m in RULES}
    assert len(RULES) == len(METER) + len(CATALOG) + len(EVENTS)


@pytest.mark.parametrize("role", ROLES)
async def test_each_role_may_call_what_design_allows_and_nothing_else(
    role, tokens, secure_channel, admin_token, ws
):
    await call(secure_channel, "GrantCredits", METER["GrantCredits"](ws), admin_token)
    allowed = set(ALL) if role == "admin" else ALLOWED[role]
    seen = {}
    for method, make in ALL.items():
        seen[method] = await call(secure_channel, method, make(ws), tokens[role])
    refused = {m for m, code in seen.items() if code is grpc.StatusCode.PERMISSION_DENIED}
    assert set(ALL) - allowed == refused
    # What is allowed got past the guard: it ran, or the ledger itself refused it.
    for method in allowed:
        assert seen[method] not in (
            grpc.StatusCode.PERMISSION_DENIED,
            grpc.StatusCode.UNAUTHENTICATED,
            grpc.StatusCode.UNKNOWN,
            grpc.StatusCode.INTERNAL,
        ), (method, seen[method])


async def test_calls_of_different_roles_at_once_are_each_judged_on_their_own(
    tokens, secure_channel, ws
):
    codes = await asyncio.gather(
        *(call(secure_channel, "GrantCredits", METER["GrantCredits"](ws), tokens[r]) for r in ROLES)
    )
    expected = [
        grpc.StatusCode.OK if r in ("billing", "admin") else grpc.StatusCode.PERMISSION_DENIED
        for r in ROLES
    ]
    assert expected == codes
