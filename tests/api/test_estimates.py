"""EstimateCampaign: the pricing page's typical campaigns, each factor, affordability."""

from __future__ import annotations

from typing import Any

import grpc
import pytest

from meterpb.v1 import catalog_pb2 as cpb
from meterpb.v1 import meter_pb2 as pb
from tests.support import fails, grant, reserve, rid


async def estimate(catalog: Any, **kw: Any) -> cpb.EstimateCampaignResponse:
    return await catalog.EstimateCampaign(cpb.EstimateCampaignRequest(**kw))


@pytest.mark.parametrize(
    ("plan", "low", "high"),
    [
        ({"platforms": 1, "duration_days": 7}, 10, 20),
        ({"platforms": 2, "duration_days": 14}, 30, 60),
        ({"platforms": 3, "duration_days": 14}, 30, 60),
        ({"platforms": 4, "duration_days": 30}, 50, 150),
        ({"platforms": 4, "duration_days": 30, "strategy_analysis": True}, 50, 150),
    ],
)
async def test_the_whole_range_of_a_typical_campaign_lies_in_the_pricing_pages(
    catalog, plan, low, high
):
    """At the usual frequency and no complexity given, min and max both within the page's."""
    got = await estimate(catalog, **plan)

    assert low <= got.min <= got.expected <= got.max <= high
    assert (got.min, got.expected, got.max) == (
        sum(line.min for line in got.breakdown),
        sum(line.expected for line in got.breakdown),
        sum(line.max for line in got.breakdown),
    )


async def test_the_typical_campaigns_give_the_documented_figures(catalog):
    plans = [(1, 7), (2, 14), (3, 14), (4, 30)]

    got = [await estimate(catalog, platforms=p, duration_days=d) for p, d in plans]

    assert [(15, 17, 18), (32, 37, 41), (41, 47, 52), (97, 111, 124)] == [
        (e.min, e.expected, e.max) for e in got
    ]


@pytest.mark.parametrize(
    ("factor", "smaller", "larger"),
    [
        ("platforms", 1, 3),
        ("duration_days", 7, 28),
        ("posts_per_week", 2, 7),
        ("complexity", pb.COMPLEXITY_SIMPLE, pb.COMPLEXITY_COMPLEX),
        ("rss_items", 0, 20),
        ("regenerations", 0, 10),
        ("strategy_analysis", False, True),
    ],
)
async def test_the_estimate_grows_with_each_factor(catalog, factor, smaller, larger):
    base = {"platforms": 2, "duration_days": 14}

    less = await estimate(catalog, **{**base, factor: smaller})
    more = await estimate(catalog, **{**base, factor: larger})

    assert less.expected < more.expected
    assert less.min <= more.min
    assert less.max <= more.max


async def test_the_breakdown_names_each_operation_with_its_count(catalog):
    got = await estimate(catalog, platforms=1, duration_days=7, rss_items=4)

    counts = {line.operation: line.count for line in got.breakdown}
    assert {
        "campaign.create_strategy": 1,
        "content.generate_post": 4,
        "content.regenerate": 1,
        "rss.process_item": 4,
    } == counts


async def test_a_complexity_prices_every_call_at_its_tier(catalog):
    got = await estimate(catalog, platforms=2, duration_days=14, complexity=pb.COMPLEXITY_STANDARD)
    assert got.min == got.expected == got.max


AFFORDABILITY = ("sufficient", "shortfall", "available", "suggested_package")


@pytest.mark.parametrize(
    "plan", [{"platforms": 1, "duration_days": 7}, {"platforms": 20, "duration_days": 366}]
)
async def test_an_estimate_without_a_workspace_says_nothing_about_affording_it(catalog, plan):
    """No sufficient, shortfall or available at all: unset, not false and 0."""
    got = await estimate(catalog, **plan)

    assert [] == [field for field in AFFORDABILITY if got.HasField(field)]
    assert [] == [field.name for field, _ in got.ListFields() if field.name in AFFORDABILITY]


async def test_a_workspace_that_can_afford_the_campaign_is_sufficient(catalog, stub, ws):
    await grant(stub, ws, 500)

    got = await estimate(catalog, platforms=2, duration_days=14, workspace_id=ws)

    assert (True, 0, 500) == (got.sufficient, got.shortfall, got.available)
    # Present although at their defaults for shortfall: asked about, and answered.
    assert [True, True, True] == [got.HasField(f) for f in ("sufficient", "shortfall", "available")]
    assert not got.HasField("suggested_package")


async def test_a_workspace_with_nothing_available_is_answered_not_sufficient(catalog, stub, ws):
    await grant(stub, ws, 5)
    await reserve(stub, ws, rid(), 5)

    got = await estimate(catalog, platforms=1, duration_days=7, workspace_id=ws)

    assert [True, True, True] == [got.HasField(f) for f in ("sufficient", "shortfall", "available")]
    assert (False, got.max, 0) == (got.sufficient, got.shortfall, got.available)


async def test_a_short_workspace_gets_its_shortfall_and_the_package_to_buy(catalog, stub, ws):
    await grant(stub, ws, 10)

    got = await estimate(
        catalog, platforms=4, duration_days=30, strategy_analysis=True, workspace_id=ws
    )

    assert (False, got.max - 10) == (got.sufficient, got.shortfall)
    # 118 short of the default catalog's max: Starter (100) is too small, Basic (250) covers it.
    assert ("Basic", 250) == (got.suggested_package.name, got.suggested_package.credits)


async def test_an_estimate_for_an_unknown_workspace_is_not_found(catalog):
    f = await fails(estimate(catalog, platforms=1, duration_days=7, workspace_id=f"ws-{rid()}"))
    assert (grpc.StatusCode.NOT_FOUND, "WORKSPACE_NOT_FOUND") == (f.code, f.reason)


async def test_a_bad_plan_is_refused_naming_every_bad_field(catalog):
    f = await fails(estimate(catalog, platforms=0, duration_days=400, posts_per_week=-1))
    assert (grpc.StatusCode.INVALID_ARGUMENT, ["platforms", "duration_days", "posts_per_week"]) == (
        f.code,
        f.fields,
    )
