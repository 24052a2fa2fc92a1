"""Campaign estimates: the counts, the pricing page's typical campaigns, and monotonicity."""

# STYLE.md writes `expected == actual`; ruff's SIM300 (Yoda conditions) wants the reverse.

from __future__ import annotations

import dataclasses

import pytest
from hypothesis import given
from hypothesis import strategies as st

from meter import errors
from meter.catalog.defaults import load_default_catalog_rules
from meter.catalog.estimate import (
    CampaignPlan,
    Estimate,
    EstimateLine,
    estimate_campaign,
    validate_plan,
)
from meter.catalog.model import Complexity, CostUnit, Rule

RULES = load_default_catalog_rules()
TIERS = (Complexity.SIMPLE, Complexity.STANDARD, Complexity.COMPLEX)


def totals(plan: CampaignPlan) -> tuple[int, int, int]:
    estimate = estimate_campaign(RULES, plan)
    return (estimate.min, estimate.expected, estimate.max)


@pytest.mark.parametrize(
    ("plan", "page_low", "page_high"),
    [
        (CampaignPlan(platforms=1, duration_days=7), 10, 20),
        (CampaignPlan(platforms=2, duration_days=14), 30, 60),
        (CampaignPlan(platforms=3, duration_days=14), 30, 60),
        (CampaignPlan(platforms=4, duration_days=30), 50, 150),
        (CampaignPlan(platforms=4, duration_days=30, strategy_analysis=True), 50, 150),
    ],
)
def test_typical_campaigns_agree_with_the_pricing_page(
    plan: CampaignPlan, page_low: int, page_high: int
) -> None:
    """The whole range, min to max, lies in the page's range (DESIGN.md §10)."""
    low, expected, high = totals(plan)
    assert page_low <= low <= expected <= high <= page_high


@pytest.mark.parametrize(
    ("plan", "expected"),
    [
        (CampaignPlan(1, 7), (15, 17, 18)),
        (CampaignPlan(2, 14), (32, 37, 41)),
        (CampaignPlan(3, 14), (41, 47, 52)),
        (CampaignPlan(4, 30), (97, 111, 124)),
        (CampaignPlan(4, 30, strategy_analysis=True), (100, 115, 128)),
    ],
)
def test_the_documented_figures_are_the_computed_ones(
    plan: CampaignPlan, expected: tuple[int, int, int]
) -> None:
    assert expected == totals(plan)


def test_an_estimate_is_broken_down_by_operation() -> None:
    plan = CampaignPlan(
        platforms=2, duration_days=7, posts_per_week=3, strategy_analysis=True, rss_items=4
    )
    # A line's min is count * rule.min + count * span * 3/8 rounded half up, its max the
    # same with 5/8, its expected count * the call's middle: 6 posts of 1-3 are 6 + 4.5,
    # 6 + 6, 6 + 7.5; one strategy of 3-10 is 3 + 2.625, 3 + 4 (3.5 rounded up), 3 + 4.375.
    expected = Estimate(
        min=6 + 11 + 4 + 3 + 4,
        expected=7 + 12 + 4 + 4 + 4,
        max=7 + 14 + 5 + 4 + 4,
        lines=(
            EstimateLine("campaign.create_strategy", 1, 6, 7, 7),
            EstimateLine("content.generate_post", 6, 11, 12, 14),
            EstimateLine("content.regenerate", 2, 4, 4, 5),
            EstimateLine("strategy.analyze", 1, 3, 4, 4),
            EstimateLine("rss.process_item", 4, 4, 4, 4),
        ),
    )
    assert expected == estimate_campaign(RULES, plan)


@pytest.mark.parametrize(
    ("plan", "expected_posts"),
    [
        (CampaignPlan(1, 7), 4),  # usual: 4 a week on the first platform
        (CampaignPlan(2, 7), 6),  # ... and 2 on each further one
        (CampaignPlan(1, 1), 1),  # part weeks round up
        (CampaignPlan(2, 14), 12),
        (CampaignPlan(3, 14), 16),
        (CampaignPlan(4, 30), 43),  # 10 * 30 / 7 = 42.86
        (CampaignPlan(2, 10, posts_per_week=5), 15),  # 2 * 5 * 10 / 7 = 14.29
        (CampaignPlan(1, 14, posts_per_week=1), 2),
    ],
)
def test_posts_are_counted_per_platform_per_week_rounding_up(
    plan: CampaignPlan, expected_posts: int
) -> None:
    [posts] = [
        line
        for line in estimate_campaign(RULES, plan).lines
        if line.operation == "content.generate_post"
    ]
    assert expected_posts == posts.count


@pytest.mark.parametrize(
    ("plan", "expected_regenerations"),
    [
        (CampaignPlan(1, 7), 1),  # 4 posts: 1 in 5, rounded up
        (CampaignPlan(3, 14), 4),  # 16 posts
        (CampaignPlan(4, 30), 9),  # 43 posts
        (CampaignPlan(1, 7, regenerations=4), 4),
        (CampaignPlan(1, 7, regenerations=0), None),  # no line for nothing
    ],
)
def test_regenerations_default_to_one_in_five_posts(
    plan: CampaignPlan, expected_regenerations: int | None
) -> None:
    counts = {line.operation: line.count for line in estimate_campaign(RULES, plan).lines}
    assert expected_regenerations == counts.get("content.regenerate")


def test_lines_without_calls_are_left_out() -> None:
    plan = CampaignPlan(1, 7, regenerations=0)
    operations = [line.operation for line in estimate_campaign(RULES, plan).lines]
    assert ["campaign.create_strategy", "content.generate_post"] == operations


@pytest.mark.parametrize(
    ("complexity", "expected"),
    [
        (Complexity.UNSPECIFIED, (15, 17, 18)),
        (Complexity.SIMPLE, (8, 8, 8)),  # 3 + 4 * 1 + 1 * 1
        (Complexity.STANDARD, (17, 17, 17)),  # 7 + 4 * 2 + 1 * 2
        (Complexity.COMPLEX, (25, 25, 25)),  # 10 + 4 * 3 + 1 * 3
    ],
)
def test_a_given_complexity_prices_every_call_at_that_tier(
    complexity: Complexity, expected: tuple[int, int, int]
) -> None:
    assert expected == totals(CampaignPlan(1, 7, complexity=complexity))


def test_a_published_catalog_changes_the_estimate() -> None:
    rules = dict(RULES)
    rules["content.generate_post"] = Rule(
        "content.generate_post", "Post", "", 10, 10, CostUnit.ITEM, free=False
    )
    assert (6 + 40 + 2, 7 + 40 + 2, 7 + 40 + 2) == (
        estimate_campaign(rules, CampaignPlan(1, 7)).min,
        estimate_campaign(rules, CampaignPlan(1, 7)).expected,
        estimate_campaign(rules, CampaignPlan(1, 7)).max,
    )


def test_a_catalog_lacking_a_needed_operation_is_reported() -> None:
    rules = {key: rule for key, rule in RULES.items() if key != "rss.process_item"}
    assert (15, 17, 18) == (
        estimate_campaign(rules, CampaignPlan(1, 7)).min,
        estimate_campaign(rules, CampaignPlan(1, 7)).expected,
        estimate_campaign(rules, CampaignPlan(1, 7)).max,
    )
    with pytest.raises(errors.MeterError) as caught:
        estimate_campaign(rules, CampaignPlan(1, 7, rss_items=1))
    assert ("OPERATION_NOT_FOUND", {"operation": "rss.process_item"}) == (
        caught.value.reason,
        caught.value.metadata,
    )


@pytest.mark.parametrize(
    ("plan", "expected_fields"),
    [
        (CampaignPlan(0, 7), ["platforms"]),
        (CampaignPlan(21, 7), ["platforms"]),
        (CampaignPlan(1, 0), ["duration_days"]),
        (CampaignPlan(1, 367), ["duration_days"]),
        (CampaignPlan(1, 7, posts_per_week=-1), ["posts_per_week"]),
        (CampaignPlan(1, 7, posts_per_week=101), ["posts_per_week"]),
        (CampaignPlan(1, 7, rss_items=-1), ["rss_items"]),
        (CampaignPlan(1, 7, rss_items=100_001), ["rss_items"]),
        (CampaignPlan(1, 7, regenerations=-2), ["regenerations"]),
        (CampaignPlan(1, 7, regenerations=100_001), ["regenerations"]),
        (CampaignPlan(1, 7, complexity=4), ["complexity"]),  # type: ignore[arg-type]
        (
            CampaignPlan(0, 0, posts_per_week=-1, rss_items=-1, regenerations=-9),
            ["platforms", "duration_days", "posts_per_week", "rss_items", "regenerations"],
        ),
    ],
)
def test_a_bad_plan_names_every_bad_field(plan: CampaignPlan, expected_fields: list[str]) -> None:
    with pytest.raises(errors.MeterError) as caught:
        validate_plan(plan)
    assert errors.Kind.INVALID == caught.value.kind
    assert expected_fields == [v.field for v in caught.value.violations]


@pytest.mark.parametrize(
    "plan",
    [
        CampaignPlan(1, 1),
        CampaignPlan(
            20,
            366,
            posts_per_week=100,
            rss_items=100_000,
            regenerations=100_000,
            complexity=Complexity.COMPLEX,
            strategy_analysis=True,
        ),
    ],
)
def test_the_extreme_good_plans_are_estimated(plan: CampaignPlan) -> None:
    low, expected, high = totals(plan)
    assert 0 < low <= expected <= high


def test_estimating_a_bad_plan_is_refused() -> None:
    with pytest.raises(errors.MeterError):
        estimate_campaign(RULES, CampaignPlan(0, 7))


plans = st.builds(
    CampaignPlan,
    platforms=st.integers(1, 19),
    duration_days=st.integers(1, 365),
    posts_per_week=st.integers(0, 99),
    complexity=st.sampled_from(Complexity),
    strategy_analysis=st.booleans(),
    rss_items=st.integers(0, 1000),
    regenerations=st.integers(-1, 1000),
)


def assert_grows(smaller: CampaignPlan, larger: CampaignPlan) -> None:
    """Every total weakly grows; expected strictly when the posts counted grow."""
    small, large = estimate_campaign(RULES, smaller), estimate_campaign(RULES, larger)
    assert small.min <= large.min
    assert small.expected <= large.expected
    assert small.max <= large.max
    if post_count(small) < post_count(large):
        assert small.expected < large.expected


def post_count(estimate: Estimate) -> int:
    return sum(line.count for line in estimate.lines if line.operation == "content.generate_post")


@given(plans)
def test_cost_grows_with_the_platforms(plan: CampaignPlan) -> None:
    assert_grows(plan, dataclasses.replace(plan, platforms=plan.platforms + 1))


@given(plans)
def test_cost_grows_with_the_duration(plan: CampaignPlan) -> None:
    assert_grows(plan, dataclasses.replace(plan, duration_days=plan.duration_days + 1))


@given(plans.filter(lambda plan: plan.posts_per_week > 0))
def test_cost_grows_with_the_posting_frequency(plan: CampaignPlan) -> None:
    assert_grows(plan, dataclasses.replace(plan, posts_per_week=plan.posts_per_week + 1))


@given(plans, st.sampled_from([(TIERS[0], TIERS[1]), (TIERS[1], TIERS[2])]))
def test_cost_grows_with_the_complexity(
    plan: CampaignPlan, tiers: tuple[Complexity, Complexity]
) -> None:
    simpler = dataclasses.replace(plan, complexity=tiers[0])
    harder = dataclasses.replace(plan, complexity=tiers[1])
    assert_grows(simpler, harder)
    assert totals(simpler)[1] < totals(harder)[1]


@given(plans)
def test_cost_grows_with_the_extras(plan: CampaignPlan) -> None:
    assert_grows(plan, dataclasses.replace(plan, rss_items=plan.rss_items + 1))
    assert_grows(
        dataclasses.replace(plan, strategy_analysis=False),
        dataclasses.replace(plan, strategy_analysis=True),
    )
    if plan.regenerations >= 0:
        assert_grows(plan, dataclasses.replace(plan, regenerations=plan.regenerations + 1))


@given(plans)
def test_the_unknown_complexity_lies_strictly_between_the_simple_and_complex_estimates(
    plan: CampaignPlan,
) -> None:
    """Expected is the standard estimate; min and max are inside the all-simple and
    all-complex ones, never at them (a campaign's calls are not all at one end)."""
    unknown = totals(dataclasses.replace(plan, complexity=Complexity.UNSPECIFIED))
    simple = totals(dataclasses.replace(plan, complexity=Complexity.SIMPLE))
    standard = totals(dataclasses.replace(plan, complexity=Complexity.STANDARD))
    complex_ = totals(dataclasses.replace(plan, complexity=Complexity.COMPLEX))
    assert standard[1] == unknown[1]
    assert simple[0] < unknown[0] <= unknown[1] <= unknown[2] < complex_[2]


rules = st.builds(
    lambda low, span, unit: Rule("op", "Op", "", low, low + span, unit, free=low + span == 0),
    st.integers(0, 20),
    st.integers(0, 20),
    st.sampled_from(CostUnit),
)


@given(
    plans.filter(lambda plan: plan.complexity is Complexity.UNSPECIFIED),
    st.fixed_dictionaries(
        {
            "campaign.create_strategy": rules,
            "content.generate_post": rules,
            "content.regenerate": rules,
            "strategy.analyze": rules,
            "rss.process_item": rules,
        }
    ),
)
def test_every_line_of_any_catalog_keeps_its_range_in_order(
    plan: CampaignPlan, catalog: dict[str, Rule]
) -> None:
    """Per line: all simple <= min <= expected = the calls' standard cost <= max <= all
    complex, whatever the rule (odd spans round each call's middle up past 5/8)."""
    by_tier = {
        tier: {
            line.operation: line
            for line in estimate_campaign(catalog, dataclasses.replace(plan, complexity=tier)).lines
        }
        for tier in TIERS
    }
    for line in estimate_campaign(catalog, plan).lines:
        simple, standard, complex_ = (by_tier[tier][line.operation] for tier in TIERS)
        assert simple.min <= line.min <= line.expected <= line.max <= complex_.max
        assert standard.expected == line.expected
