"""Budgets, usage by label and the runway through both clients (DESIGN.md §13)."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime

import pytest

from meter.client import (
    BudgetExceeded,
    FailedPrecondition,
    InvalidArgument,
    MemberLimitReached,
    MeterClient,
)
from meterpb.v1 import meter_pb2 as pb
from tests.support import grant, rid


async def test_a_project_budget_refuses_with_its_numbers_and_lists_its_standing(meter, stub, ws):
    await grant(stub, ws, 100)
    budget = await meter.set_budget(
        ws, "apollo-day", key="project", value="apollo", period="day", limit=10, warn_at=[50, 90]
    )
    assert ("project", "apollo", pb.LIMIT_PERIOD_DAY, 10, [50, 90], True) == (
        budget.scope_key, budget.scope_value, budget.period, budget.limit, list(budget.warn_at),
        budget.enabled,
    )  # fmt: skip
    await meter.charge(ws, rid(), amount=4, labels={"project": "apollo"})
    await meter.reserve(ws, rid(), amount=3, labels={"project": "apollo", "team": "ml"})

    with pytest.raises(BudgetExceeded) as refused:
        await meter.reserve(ws, rid(), amount=5, labels={"project": "apollo"})

    e = refused.value
    assert not isinstance(e, MemberLimitReached)
    assert isinstance(e, FailedPrecondition)
    assert ("BUDGET_EXCEEDED", "apollo-day", "project", "apollo", "day") == (
        e.reason, e.budget_id, e.scope_key, e.scope_value, e.period,
    )  # fmt: skip
    assert (10, 7, 3, 5) == (e.limit, e.used, e.remaining, e.required)
    assert datetime.fromisoformat(e.resets_at) > datetime.now(UTC)
    # Another project is not under it.
    await meter.charge(ws, rid(), amount=6, labels={"project": "zeus"})
    [listed] = await meter.budgets(ws)
    assert ("apollo-day", 7, 3) == (listed.budget_id, listed.used, listed.remaining)
    assert listed.resets_at.ToDatetime(tzinfo=UTC).isoformat() == e.resets_at


async def test_a_default_budget_gives_each_value_its_own_room_and_a_total_never_resets(
    meter, stub, ws
):
    await grant(stub, ws, 100)
    await meter.set_budget(ws, "per-team", key="team", period="total", limit=5)
    await meter.charge(ws, rid(), amount=5, labels={"team": "ml"})
    await meter.charge(ws, rid(), amount=2, labels={"team": "web"})

    with pytest.raises(BudgetExceeded) as refused:
        await meter.charge(ws, rid(), amount=1, labels={"team": "ml"})

    assert ("per-team", "ml", "total", "") == (
        refused.value.budget_id, refused.value.scope_value, refused.value.period,
        refused.value.resets_at,
    )  # fmt: skip
    [budget] = await meter.budgets(ws)
    assert ("", pb.LIMIT_PERIOD_TOTAL, False) == (
        budget.scope_value, budget.period, budget.HasField("resets_at"),
    )  # fmt: skip
    assert {("ml", 5, 0), ("web", 2, 3)} == {(v.value, v.used, v.remaining) for v in budget.values}


async def test_an_actor_budget_is_a_member_limit_and_disabled_or_deleted_budgets_refuse_nothing(
    meter, stub, ws
):
    await grant(stub, ws, 100)
    await meter.set_budget(ws, "ana-week", key="actor_id", value="ana", period="week", limit=3)
    with pytest.raises(MemberLimitReached) as refused:
        await meter.reserve(ws, rid(), amount=4, actor="ana")
    # Every spend limit is a BudgetExceeded: one except clause catches both.
    assert isinstance(refused.value, BudgetExceeded)
    assert ("MEMBER_LIMIT_REACHED", "ana-week", "actor_id", "ana", 3) == (
        refused.value.reason, refused.value.budget_id, refused.value.scope_key,
        refused.value.scope_value, refused.value.limit,
    )  # fmt: skip
    assert ["ana"] == [x.actor_id for x in await meter.member_limits(ws)]

    off = await meter.set_budget(
        ws, "ana-week", key="actor_id", value="ana", period="week", limit=3, enabled=False
    )
    assert off.enabled is False
    await meter.charge(ws, rid(), amount=4, actor="ana")
    assert await meter.delete_budget(ws, "ana-week") is True
    assert await meter.delete_budget(ws, "ana-week") is False
    assert [] == await meter.budgets(ws)


async def test_a_bad_budget_names_its_field(meter, stub, ws):
    await grant(stub, ws, 10)
    with pytest.raises(InvalidArgument) as bad:
        await meter.set_budget(ws, "b", key="Project!", period="month", limit=1)
    assert ["budget.scope_key"] == [v.field for v in bad.value.violations]
    with pytest.raises(ValueError, match="YEAR"):
        await meter.set_budget(ws, "b", key="project", period="year", limit=1)


async def test_usage_by_label_carries_each_values_budgets(meter, stub, ws):
    await grant(stub, ws, 100)
    await meter.set_budget(ws, "each", key="project", period="month", limit=30)
    await meter.charge(ws, rid(), amount=12, labels={"project": "zeus"})
    await meter.reserve(ws, rid(), amount=7, labels={"project": "hermes"})

    report = await meter.usage(ws, "label", label_key="project")

    rows = {r.key: r for r in report.rows}
    assert {"zeus", "hermes"} == set(rows)
    assert (12, 1, 0) == (rows["zeus"].credits, rows["zeus"].count, rows["zeus"].held)
    assert [("each", 30, 12, 18)] == [
        (b.budget_id, b.limit, b.used, b.remaining) for b in rows["zeus"].budgets
    ]
    assert [("each", 7, 23)] == [(b.budget_id, b.used, b.remaining) for b in rows["hermes"].budgets]
    with pytest.raises(InvalidArgument) as bad:
        await meter.usage(ws, "label")
    assert ["label_key"] == [v.field for v in bad.value.violations]


async def test_the_blocking_client_sets_runway_days_and_reads_the_runway(target, stub, ws):
    """100 granted, 14 charged today: 2 a day over 7 days, so the 86 left last 43 days."""
    await grant(stub, ws, 100)

    def run() -> tuple[pb.AlertThresholds, pb.Balance, pb.Balance, list[pb.Budget]]:
        with MeterClient(target) as client:
            unburnt = client.balance(ws)
            thresholds = client.set_alert_thresholds(ws, low=50, critical=5, runway_days=60)
            client.set_budget(ws, "all", key="project", value="x", period="month", limit=99)
            client.charge(ws, rid(), amount=14, actor="ana")
            return thresholds, unburnt, client.balance(ws), client.budgets(ws)

    thresholds, unburnt, b, budgets = await asyncio.to_thread(run)
    assert (50, 5, 60) == (thresholds.low, thresholds.critical, thresholds.runway_days)
    assert (0.0, False, False) == (
        unburnt.runway.burn_per_day, unburnt.runway.HasField("days_left"),
        unburnt.runway.HasField("zero_at"),
    )  # fmt: skip
    r = b.runway
    assert (2.0, pytest.approx(14 / 30), 43.0, 60) == (
        r.burn_per_day, r.burn_per_day_30d, r.days_left, r.runway_days,
    )  # fmt: skip
    days = (r.zero_at.ToDatetime(tzinfo=UTC) - datetime.now(UTC)).total_seconds() / 86400
    assert 42.9 < days <= 43.0
    assert ["all"] == [x.budget_id for x in budgets]


async def test_a_stream_item_past_a_budget_raises_budget_exceeded(meter, stub, ws):
    await grant(stub, ws, 100)
    await meter.set_budget(ws, "bot", key="agent", value="bot", period="day", limit=5)

    async with meter.stream_session() as session:
        results = await asyncio.gather(
            session.charge(ws, rid(), "strategy.analyze", amount=4, labels={"agent": "bot"}),
            session.charge(ws, rid(), "strategy.analyze", amount=4, labels={"agent": "bot"}),
            return_exceptions=True,
        )

    refused = [r for r in results if isinstance(r, BudgetExceeded)]
    assert 1 == len(refused)
    assert ("bot", 4, 1) == (refused[0].budget_id, refused[0].used, refused[0].remaining)
