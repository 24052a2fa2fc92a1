"""Budgets over the wire (DESIGN.md §13): limits for actors and labels, enforced with the hold,
their precedence, periods, notices and usage; and the runway on the balance."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta
from typing import Any

import grpc
import pytest

from meterpb.v1 import meter_pb2 as pb
from tests.api.test_policies import clock_at
from tests.events.feed import wait_events
from tests.support import balance, fails, grant, rid

DAY, WEEK, MONTH, TOTAL = (
    pb.LIMIT_PERIOD_DAY,
    pb.LIMIT_PERIOD_WEEK,
    pb.LIMIT_PERIOD_MONTH,
    pb.LIMIT_PERIOD_TOTAL,
)


async def set_budget(
    stub: Any,
    ws: str,
    budget_id: str,
    key: str,
    value: str,
    limit: int,
    period: int = DAY,
    **kw: Any,
) -> pb.Budget:
    return await stub.SetBudget(
        pb.SetBudgetRequest(
            workspace_id=ws,
            budget=pb.Budget(
                budget_id=budget_id,
                scope_key=key,
                scope_value=value,
                period=period,
                limit=limit,
                **kw,
            ),
        )
    )


def reserve(ws: str, amount: int, labels: dict[str, str], actor: str = "", job: str = "") -> Any:
    return pb.ReserveRequest(
        workspace_id=ws,
        request_id=job or rid(),
        operation="content.optimize",
        amount=amount,
        actor_id=actor,
        labels=labels,
    )


async def budgets_of(stub: Any, ws: str) -> dict[str, pb.Budget]:
    found = await stub.ListBudgets(pb.ListBudgetsRequest(workspace_id=ws))
    return {b.budget_id: b for b in found.budgets}


@pytest.mark.parametrize("path", ["unary", "stream", "charge"])
async def test_racing_reserves_under_a_project_budget_hold_exactly_its_limit(
    stub, events, ws, path
):
    await grant(stub, ws, 1000)
    await set_budget(stub, ws, "apollo-daily", "project", "apollo", 10)
    jobs = [rid() for _ in range(50)]
    labels = {"project": "apollo"}
    if path == "stream":
        call = stub.Stream()
        await call.write(
            pb.StreamRequest(
                items=[pb.StreamItem(reserve=reserve(ws, 1, labels, job=j)) for j in jobs]
            )
        )
        await call.done_writing()
        codes = [r.status.code for m in [m async for m in call] for r in m.results]
        ok = codes.count(0)
        assert 50 == ok + codes.count(grpc.StatusCode.FAILED_PRECONDITION.value[0])
    else:

        async def one(j: str) -> grpc.StatusCode:
            try:
                if path == "charge":
                    await stub.Charge(
                        pb.ChargeRequest(
                            workspace_id=ws,
                            request_id=j,
                            operation="content.optimize",
                            amount=1,
                            labels=labels,
                        )
                    )
                else:
                    await stub.Reserve(reserve(ws, 1, labels, job=j))
            except grpc.aio.AioRpcError as e:
                return e.code()
            return grpc.StatusCode.OK

        outcomes = await asyncio.gather(*(one(j) for j in jobs))
        assert {grpc.StatusCode.OK, grpc.StatusCode.FAILED_PRECONDITION} == set(outcomes)
        ok = outcomes.count(grpc.StatusCode.OK)
    assert 10 == ok
    assert 990 == (await balance(stub, ws)).available
    f = await fails(stub.Reserve(reserve(ws, 1, labels)))
    assert "BUDGET_EXCEEDED" == f.reason
    assert {
        "budget_id": "apollo-daily",
        "scope_key": "project",
        "scope_value": "apollo",
        "limit": "10",
        "used": "10",
        "remaining": "0",
    }.items() <= f.metadata.items()
    tomorrow = (datetime.now(UTC) + timedelta(days=1)).replace(
        hour=0, minute=0, second=0, microsecond=0
    )
    assert tomorrow == datetime.fromisoformat(f.metadata["resets_at"])
    # Another project, and a request without the label, are not under it.
    await stub.Reserve(reserve(ws, 100, {"project": "zeus"}))
    await stub.Reserve(reserve(ws, 100, {}))
    exceeded = await wait_events(events, ws, 1, "budget.exceeded")
    assert 1 == len(exceeded)  # once per period, however many refusals
    assert {"budget_id": "apollo-daily", "scope_value": "apollo", "used": 10}.items() <= exceeded[
        0
    ][1].items()
    assert 10 == (await budgets_of(stub, ws))["apollo-daily"].used


async def test_the_budget_with_the_least_room_refuses_and_every_one_must_fit(stub, ws):
    """Three budgets over one request: a member's, a team's and an API key's."""
    await grant(stub, ws, 1000)
    await set_budget(stub, ws, "ana-week", "actor_id", "ana", 100, WEEK)
    await set_budget(stub, ws, "growth-day", "team", "growth", 30)
    await set_budget(stub, ws, "key-total", "api_key", "", 50, TOTAL)  # every key its own
    labels = {"team": "growth", "api_key": "k1"}
    await stub.Reserve(reserve(ws, 20, labels, actor="ana"))
    # 10 more: the team has 10 left, the key 30, ana 80. 11 passes the team's.
    f = await fails(stub.Reserve(reserve(ws, 11, labels, actor="ana")))
    assert ("BUDGET_EXCEEDED", "growth-day", "10") == (
        f.reason,
        f.metadata["budget_id"],
        f.metadata["remaining"],
    )
    await stub.Reserve(reserve(ws, 10, labels, actor="ana"))
    # Another team: the key (20 left) is now tightest; ana's week has 70.
    other = {"team": "ops", "api_key": "k1"}
    f = await fails(stub.Reserve(reserve(ws, 21, other, actor="ana")))
    assert ("key-total", "k1", "20") == (
        f.metadata["budget_id"],
        f.metadata["scope_value"],
        f.metadata["remaining"],
    )
    # An actor budget refuses as a member limit does.
    await set_budget(stub, ws, "ana-week", "actor_id", "ana", 35, WEEK)
    f = await fails(stub.Reserve(reserve(ws, 6, {"team": "ops"}, actor="ana")))
    assert ("MEMBER_LIMIT_REACHED", "ana-week", "5") == (
        f.reason,
        f.metadata["budget_id"],
        f.metadata["remaining"],
    )


@pytest.mark.parametrize(
    ("key", "period", "says"),
    [
        ("actor_id", DAY, "'ana' has used 0 of its daily limit of 3; 4 more would exceed it"),
        ("actor_id", TOTAL, "'ana' has used 0 of its total limit of 3; 4 more would"),
        ("project", WEEK, "(project=apollo) has 3 of its 3 left this week (UTC); 4 more would"),
        ("project", TOTAL, "(project=apollo) has 3 of its 3 left in total; 4 more would"),
    ],
)
async def test_a_refusal_says_in_words_which_limit_and_period_it_met(stub, ws, key, period, says):
    await grant(stub, ws, 100)
    value = "ana" if key == "actor_id" else "apollo"
    await set_budget(stub, ws, f"b-{key}", key, value, 3, period)
    f = await fails(stub.Reserve(reserve(ws, 4, {"project": "apollo"}, actor="ana")))
    assert says in f.message


async def test_a_workspace_has_at_most_100_budgets_and_may_still_replace_them(stub, db, ws):
    await grant(stub, ws, 10)
    for i in range(100):
        await set_budget(stub, ws, f"b{i}", "project", f"p{i}", 5)
    before = db.snapshot(ws)
    f = await fails(set_budget(stub, ws, "b100", "project", "p100", 5))
    assert ("TOO_MANY_BUDGETS", "100") == (f.reason, f.metadata["limit"])
    f = await fails(
        stub.SetMemberLimit(
            pb.SetMemberLimitRequest(workspace_id=ws, actor_id="ana", period=DAY, limit=9)
        )
    )
    assert "TOO_MANY_BUDGETS" == f.reason
    assert before == db.snapshot(ws)
    assert 100 == len(await budgets_of(stub, ws))
    # Replacing one is not adding one; after a delete there is room again.
    assert 7 == (await set_budget(stub, ws, "b7", "project", "p7", 7)).limit
    await stub.DeleteBudget(pb.DeleteBudgetRequest(workspace_id=ws, budget_id="b0"))
    await set_budget(stub, ws, "b100", "project", "p100", 5)
    assert 100 == len(await budgets_of(stub, ws))


async def test_a_default_per_key_budget_gives_each_value_its_own_room(stub, ws):
    await grant(stub, ws, 1000)
    await set_budget(stub, ws, "per-key", "api_key", "", 5)
    await stub.Reserve(reserve(ws, 5, {"api_key": "a"}))
    await stub.Reserve(reserve(ws, 5, {"api_key": "b"}))
    assert "BUDGET_EXCEEDED" == (await fails(stub.Reserve(reserve(ws, 1, {"api_key": "a"})))).reason
    # A budget naming a value replaces the default for that value.
    await set_budget(stub, ws, "vip", "api_key", "vip", 50)
    await stub.Reserve(reserve(ws, 40, {"api_key": "vip"}))
    b = (await budgets_of(stub, ws))["per-key"]
    assert [("a", 5, 0), ("b", 5, 0), ("vip", 40, 0)] == [
        (v.value, v.used, v.remaining) for v in b.values
    ]


async def test_a_budget_resets_at_its_period_boundary_and_a_total_never_does(app, stub, ws):
    await grant(stub, ws, 1000)
    await set_budget(stub, ws, "daily", "project", "p", 5)
    await set_budget(stub, ws, "lifetime", "agent", "bot", 8, TOTAL)
    labels = {"project": "p", "agent": "bot"}
    job = rid()
    await stub.Charge(
        pb.ChargeRequest(
            workspace_id=ws, request_id=job, operation="content.optimize", amount=5, labels=labels
        )
    )
    assert "daily" == (await fails(stub.Reserve(reserve(ws, 1, labels)))).metadata["budget_id"]
    tomorrow = datetime.now(UTC).replace(hour=0, minute=5) + timedelta(days=1)
    with clock_at(app, tomorrow):
        await stub.Reserve(reserve(ws, 3, labels))  # a new day for the project
        f = await fails(stub.Reserve(reserve(ws, 1, labels)))
        assert ("lifetime", "8", "") == (
            f.metadata["budget_id"],
            f.metadata["used"],
            f.metadata["resets_at"],
        )


async def test_threshold_and_exceeded_notices_come_once_per_period(stub, events, ws):
    await grant(stub, ws, 1000)
    await set_budget(stub, ws, "p", "project", "x", 100, warn_at=[50, 90])
    labels = {"project": "x"}
    for amount in (40, 20, 5, 30):  # 40, 60 (50% crossed), 65, 95 (90% crossed)
        await stub.Charge(
            pb.ChargeRequest(
                workspace_id=ws,
                request_id=rid(),
                operation="content.optimize",
                amount=amount,
                labels=labels,
            )
        )
    for _ in range(3):
        await fails(stub.Reserve(reserve(ws, 10, labels)))
    found = await wait_events(events, ws, 3, "budget.threshold", "budget.exceeded")
    assert [
        ("budget.threshold", 50, 60),
        ("budget.threshold", 90, 95),
        ("budget.exceeded", None, 95),
    ] == [(t, d.get("percent"), d["used"]) for t, d in found]


async def test_usage_by_label_shows_each_value_with_its_budgets_holders_included(stub, ws):
    await grant(stub, ws, 1000)
    await set_budget(stub, ws, "apollo", "project", "apollo", 100)
    await set_budget(stub, ws, "each", "project", "", 30)
    job = rid()
    await stub.Charge(
        pb.ChargeRequest(
            workspace_id=ws,
            request_id=job,
            operation="content.optimize",
            amount=12,
            labels={"project": "zeus"},
        )
    )
    await stub.Refund(
        pb.RefundRequest(workspace_id=ws, request_id=rid("r"), charge_request_id=job, amount=2)
    )
    await stub.Reserve(reserve(ws, 7, {"project": "hermes"}))
    await stub.Charge(
        pb.ChargeRequest(workspace_id=ws, request_id=rid(), operation="content.optimize", amount=3)
    )
    report = await stub.GetUsage(
        pb.GetUsageRequest(workspace_id=ws, group_by=pb.USAGE_GROUPING_LABEL, label_key="project")
    )
    rows = {r.key: r for r in report.rows}
    assert ["zeus", "", "apollo", "hermes"] == [r.key for r in report.rows]
    assert (10, 1, 0) == (rows["zeus"].credits, rows["zeus"].count, rows["zeus"].held)
    assert (0, 0, 7) == (rows["hermes"].credits, rows["hermes"].count, rows["hermes"].held)
    assert [("each", 30, 7, 23)] == [
        (b.budget_id, b.limit, b.used, b.remaining) for b in rows["hermes"].budgets
    ]
    assert [("apollo", 100, 0)] == [(b.budget_id, b.limit, b.used) for b in rows["apollo"].budgets]
    assert [] == list(rows[""].budgets)


async def test_member_limits_are_budgets_and_both_calls_see_the_same(stub, ws):
    await grant(stub, ws, 100)
    await stub.SetMemberLimit(
        pb.SetMemberLimitRequest(workspace_id=ws, actor_id="ana", period=DAY, limit=9)
    )
    await set_budget(stub, ws, "ben-month", "actor_id", "ben", 40, MONTH)
    await stub.Reserve(reserve(ws, 4, {}, actor="ana"))
    assert {
        "member:ana:day": ("actor_id", "ana", 9, 4),
        "ben-month": ("actor_id", "ben", 40, 0),
    } == {
        k: (b.scope_key, b.scope_value, b.limit, b.used)
        for k, b in (await budgets_of(stub, ws)).items()
    }
    limits = await stub.ListMemberLimits(pb.ListMemberLimitsRequest(workspace_id=ws))
    assert [("ana", DAY, 9, 4), ("ben", MONTH, 40, 0)] == [
        (x.actor_id, x.period, x.limit, x.used) for x in limits.limits
    ]
    await stub.DeleteBudget(pb.DeleteBudgetRequest(workspace_id=ws, budget_id="member:ana:day"))
    limits = await stub.ListMemberLimits(pb.ListMemberLimitsRequest(workspace_id=ws))
    assert ["ben"] == [x.actor_id for x in limits.limits]


@pytest.mark.parametrize(
    ("budget", "field"),
    [
        ({"budget_id": "", "scope_key": "project", "period": DAY, "limit": 1}, "budget.budget_id"),
        ({"budget_id": "b", "scope_key": "", "period": DAY, "limit": 1}, "budget.scope_key"),
        (
            {"budget_id": "b", "scope_key": "Project!", "period": DAY, "limit": 1},
            "budget.scope_key",
        ),
        ({"budget_id": "b", "scope_key": "project", "period": DAY, "limit": -1}, "budget.limit"),
        (
            {"budget_id": "b", "scope_key": "project", "period": DAY, "limit": 10**13},
            "budget.limit",
        ),
        ({"budget_id": "b", "scope_key": "project", "limit": 1}, "budget.period"),
        (
            {"budget_id": "b", "scope_key": "project", "period": DAY, "limit": 1, "warn_at": [0]},
            "budget.warn_at",
        ),
        (
            {"budget_id": "b", "scope_key": "project", "period": DAY, "limit": 1, "warn_at": [101]},
            "budget.warn_at",
        ),
        (
            {"budget_id": "member:x:day", "scope_key": "project", "period": DAY, "limit": 1},
            "budget.budget_id",
        ),
    ],
)
async def test_a_bad_budget_is_refused_naming_the_field_and_nothing_is_written(
    stub, db, ws, budget, field
):
    await grant(stub, ws, 10)
    before = db.snapshot(ws)
    f = await fails(
        stub.SetBudget(pb.SetBudgetRequest(workspace_id=ws, budget=pb.Budget(**budget)))
    )
    assert (grpc.StatusCode.INVALID_ARGUMENT, [field]) == (f.code, f.fields)
    assert before == db.snapshot(ws)
    assert [] == list((await stub.ListBudgets(pb.ListBudgetsRequest(workspace_id=ws))).budgets)


async def test_the_runway_counts_holds_as_spent_and_lots_that_expire_first(app, stub, ws):
    """A known history: 70 credits burnt today (10 a day over 7 days); 200 available, of
    which 50 expire in 3 days and burn last (priority 90), so they are lost; 20 held."""
    now = datetime.now(UTC).replace(microsecond=0)
    await grant(stub, ws, 50, expires_at=_ts(now + timedelta(days=3)), priority=90)
    await grant(stub, ws, 240)
    await stub.Charge(
        pb.ChargeRequest(workspace_id=ws, request_id=rid(), operation="content.optimize", amount=70)
    )
    await stub.Reserve(reserve(ws, 20, {}))
    await stub.SetAutoTopUp(
        pb.SetAutoTopUpRequest(
            workspace_id=ws, enabled=True, threshold=20, package="Starter", monthly_limit=1
        )
    )
    b = await balance(stub, ws)
    assert 200 == b.available
    r = b.runway
    assert (10.0, pytest.approx(70 / 30)) == (r.burn_per_day, r.burn_per_day_30d)
    # 150 of the other lot last 15 days; the 50 expire on day 3, unspent. Below the top-up
    # threshold of 20 two days before zero.
    assert pytest.approx(15.0, abs=0.01) == r.days_left
    zero = r.zero_at.ToDatetime(tzinfo=UTC)
    assert abs((zero - now).total_seconds() - 15 * 86400) < 60
    topup = r.topup_at.ToDatetime(tzinfo=UTC)
    assert abs((zero - topup).total_seconds() - 2 * 86400) < 60
    assert 7 == r.runway_days


async def test_runway_low_fires_once_below_the_threshold_and_re_arms_above(stub, events, ws):
    await grant(stub, ws, 1000)
    await stub.SetAlertThresholds(
        pb.SetAlertThresholdsRequest(workspace_id=ws, low=10, critical=1, runway_days=30)
    )
    charge = pb.ChargeRequest(workspace_id=ws, operation="content.optimize", amount=70)
    for _ in range(3):
        charge.request_id = rid()
        await stub.Charge(charge)  # 210 today: 30/day, 790 last 26 days: low
    await grant(stub, ws, 500)  # 1290: 43 days, re-armed
    charge.request_id = rid()
    charge.amount = 140  # 350 today: 50/day, 1150 last 23 days: low again
    await stub.Charge(charge)
    found = await wait_events(events, ws, 2, "balance.runway_low")
    assert [(30, 26.33), (30, 23.0)] == [(d["runway_days"], d["days_left"]) for _, d in found]
    assert 30 == (await balance(stub, ws)).thresholds.runway_days


def _ts(at: datetime) -> Any:
    from google.protobuf.timestamp_pb2 import Timestamp

    t = Timestamp()
    t.FromDatetime(at)
    return t
