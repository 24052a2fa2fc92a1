"""Campaign estimates: what a planned campaign will cost, line by line, from a catalog's rules.

An estimate is built from the catalog's own rules (a published catalog changes it):

| line              | operation                  | count                                       |
|-------------------|----------------------------|---------------------------------------------|
| strategy          | `campaign.create_strategy` | 1                                           |
| posts             | `content.generate_post`    | ceil(platforms * posts_per_week * days / 7) |
| posts, usual rate | `content.generate_post`    | ceil((2 * platforms + 2) * days / 7)        |
| regenerations     | `content.regenerate`       | as given, or usually ceil(posts / 5)        |
| strategy analysis | `strategy.analyze`         | 1 when asked for                            |
| RSS items         | `rss.process_item`         | rss_items                                   |

The usual rate (``posts_per_week = 0``) is 4 posts a week on the first platform and 2 on
each further one: further platforms mostly carry the same campaign adapted. Every counted
call is one unit (one post on one platform, one RSS item):

* complexity given: every call is priced at that tier, ``count * quote(rule,
  Usage(complexity))`` (see meter.catalog.pricing), so ``min = expected = max``, exactly what
  the same calls would be quoted one by one. These are the extremes: a campaign estimated
  as all complex is the most it can cost.
* complexity not given: a campaign's content is a mix, not every call at one end of its
  range. ``expected`` is ``count * quote(rule, Usage()).expected``, every call in the middle
  of its range (what the standard tier costs, and what a commit without a tier charges);
  ``min`` is the campaign with one call in four simple and the rest standard, 3/8 of the
  way up every range, and ``max`` one call in four complex, 5/8: a line's min is
  ``count * rule.min + count * (rule.max - rule.min) * 3/8`` rounded half up, never above
  its expected (max likewise, never below). This is the range the pricing page shows for
  its typical campaigns (DESIGN.md §4 and §10); ``max`` is the likely top, not a bound:
  the all-complex estimate is.

Lines with a count of 0 are left out. With the default catalog:

| campaign                                     | min | expected | max |
|----------------------------------------------|-----|----------|-----|
| 1 platform, 7 days                           | 15  | 17       | 18  |
| 2 platforms, 14 days                         | 32  | 37       | 41  |
| 3 platforms, 14 days                         | 41  | 47       | 52  |
| 4 platforms, 30 days                         | 97  | 111      | 124 |
| 4 platforms, 30 days, strategy analysis      | 100 | 115      | 128 |
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from meter import errors
from meter.catalog.model import Complexity, Rule, Usage
from meter.catalog.pricing import quote

STRATEGY = "campaign.create_strategy"
POST = "content.generate_post"
REGENERATION = "content.regenerate"
ANALYSIS = "strategy.analyze"
RSS_ITEM = "rss.process_item"

USUAL_POSTS_PER_WEEK_FIRST_PLATFORM = 4
USUAL_POSTS_PER_WEEK_OTHER_PLATFORM = 2
USUAL_POSTS_PER_REGENERATION = 5

# Where an unknown complexity puts min and max in each rule's range, in eighths: one call in
# four simple and the rest standard (1/4 * 0 + 3/4 * 1/2), one call in four complex.
MIN_EIGHTHS = 3
MAX_EIGHTHS = 5

MAX_PLATFORMS = 20
MAX_DURATION_DAYS = 366
MAX_POSTS_PER_WEEK = 100
MAX_RSS_ITEMS = 100_000
MAX_REGENERATIONS = 100_000


@dataclass(frozen=True, slots=True)
class CampaignPlan:
    """A planner's campaign: `posts_per_week` 0 and `regenerations` -1 mean "the usual"."""

    platforms: int
    duration_days: int
    posts_per_week: int = 0
    complexity: Complexity = Complexity.UNSPECIFIED
    strategy_analysis: bool = False
    rss_items: int = 0
    regenerations: int = -1


@dataclass(frozen=True, slots=True)
class EstimateLine:
    """The credits of `count` calls of one operation."""

    operation: str
    count: int
    min: int
    expected: int
    max: int


@dataclass(frozen=True, slots=True)
class Estimate:
    """A campaign's credits in total and per operation."""

    min: int
    expected: int
    max: int
    lines: tuple[EstimateLine, ...]


def validate_plan(plan: CampaignPlan) -> None:
    """Check a plan, naming every bad field at once.

    Raises:
        MeterError: INVALID with a violation per bad field: platforms 1..20, duration_days
            1..366, posts_per_week 0..100, rss_items 0..100000, regenerations -1..100000,
            complexity a known tier.
    """
    bounds = (
        ("platforms", plan.platforms, 1, MAX_PLATFORMS),
        ("duration_days", plan.duration_days, 1, MAX_DURATION_DAYS),
        ("posts_per_week", plan.posts_per_week, 0, MAX_POSTS_PER_WEEK),
        ("rss_items", plan.rss_items, 0, MAX_RSS_ITEMS),
        ("regenerations", plan.regenerations, -1, MAX_REGENERATIONS),
    )
    violations = [
        errors.FieldViolation(name, f"must be between {low} and {high}")
        for name, value, low, high in bounds
        if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high
    ]
    if plan.complexity not in set(Complexity):
        violations.append(
            errors.FieldViolation("complexity", f"unknown complexity {plan.complexity!r}")
        )
    if violations:
        raise errors.invalid(violations)


def estimate_campaign(catalog_rules: Mapping[str, Rule], plan: CampaignPlan) -> Estimate:
    """Estimate a campaign's credits from the rules of one catalog version.

    Raises:
        MeterError: INVALID for a bad plan (see validate_plan); NOT_FOUND /
            OPERATION_NOT_FOUND when the catalog lacks an operation the plan needs.
    """
    validate_plan(plan)
    complexity = Complexity(plan.complexity)
    lines = []
    for operation, count in _counts(plan):
        if count == 0:
            continue
        rule = catalog_rules.get(operation)
        if rule is None:
            raise errors.operation_not_found(operation)
        lines.append(_line(operation, rule, count, complexity))
    return Estimate(
        min=sum(line.min for line in lines),
        expected=sum(line.expected for line in lines),
        max=sum(line.max for line in lines),
        lines=tuple(lines),
    )


def _line(operation: str, rule: Rule, count: int, complexity: Complexity) -> EstimateLine:
    one = quote(rule, Usage(complexity=complexity))
    low, expected, high = one.min * count, one.expected * count, one.max * count
    if complexity is Complexity.UNSPECIFIED:
        # Expected stays what the calls will be charged one by one (a commit without a tier
        # costs the rounded middle); min and max never cross it, where that rounding puts a
        # call's middle past 5/8 of its range (a 1-2 rule's middle is 2).
        low = min(_share(rule, count, MIN_EIGHTHS), expected)
        high = max(_share(rule, count, MAX_EIGHTHS), expected)
    return EstimateLine(operation, count, low, expected, high)


def _share(rule: Rule, count: int, eighths: int) -> int:
    # Rounded once per line, not per call: 3/8 (or 5/8) of one 1-3 post rounds to 2, and
    # so would every post count's min and max, the range collapsing onto expected.
    return count * rule.min + (count * (rule.max - rule.min) * eighths + 4) // 8


def _counts(plan: CampaignPlan) -> tuple[tuple[str, int], ...]:
    posts = _posts(plan)
    regenerations = (
        _ceil_div(posts, USUAL_POSTS_PER_REGENERATION)
        if plan.regenerations < 0
        else plan.regenerations
    )
    return (
        (STRATEGY, 1),
        (POST, posts),
        (REGENERATION, regenerations),
        (ANALYSIS, 1 if plan.strategy_analysis else 0),
        (RSS_ITEM, plan.rss_items),
    )


def _posts(plan: CampaignPlan) -> int:
    if plan.posts_per_week > 0:
        weekly = plan.platforms * plan.posts_per_week
    else:
        weekly = USUAL_POSTS_PER_WEEK_FIRST_PLATFORM + USUAL_POSTS_PER_WEEK_OTHER_PLATFORM * (
            plan.platforms - 1
        )
    return _ceil_div(weekly * plan.duration_days, 7)


def _ceil_div(numerator: int, denominator: int) -> int:
    return -(-numerator // denominator)
