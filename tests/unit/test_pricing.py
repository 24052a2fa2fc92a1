"""Quotes: a rule's per-unit range, the units a usage counts, and the tier picking the point."""

# STYLE.md writes `expected == actual`; ruff's SIM300 (Yoda conditions) wants the reverse.

from __future__ import annotations

import pytest

from meter import errors
from meter.catalog.model import Catalog, Complexity, CostUnit, Length, Quote, Rule, Usage
from meter.catalog.pricing import quote, validate_usage


def rule(low: int, high: int, unit: CostUnit = CostUnit.CALL) -> Rule:
    return Rule("test.op", "Test", "", low, high, unit, free=high == 0)


@pytest.mark.parametrize(
    ("low", "high", "usage", "expected"),
    [
        # No tier: the whole range, expected in the middle (rounded half up).
        (1, 3, Usage(), Quote(1, 2, 3)),
        (3, 10, Usage(), Quote(3, 7, 10)),
        (2, 5, Usage(), Quote(2, 4, 5)),
        (1, 2, Usage(), Quote(1, 2, 2)),
        (0, 1, Usage(), Quote(0, 1, 1)),
        (1, 1, Usage(), Quote(1, 1, 1)),
        # Complexity alone.
        (3, 10, Usage(Complexity.SIMPLE), Quote(3, 3, 3)),
        (3, 10, Usage(Complexity.STANDARD), Quote(7, 7, 7)),
        (3, 10, Usage(Complexity.COMPLEX), Quote(10, 10, 10)),
        # Length alone.
        (1, 3, Usage(length=Length.SHORT), Quote(1, 1, 1)),
        (1, 3, Usage(length=Length.MEDIUM), Quote(2, 2, 2)),
        (1, 3, Usage(length=Length.LONG), Quote(3, 3, 3)),
        # Both: the larger fraction wins, whichever carries it.
        (1, 3, Usage(Complexity.SIMPLE, Length.LONG), Quote(3, 3, 3)),
        (1, 3, Usage(Complexity.COMPLEX, Length.SHORT), Quote(3, 3, 3)),
        (2, 5, Usage(Complexity.STANDARD, Length.SHORT), Quote(4, 4, 4)),
        (2, 5, Usage(Complexity.SIMPLE, Length.SHORT), Quote(2, 2, 2)),
    ],
)
def test_a_call_rule_is_priced_by_its_tier(
    low: int, high: int, usage: Usage, expected: Quote
) -> None:
    assert expected == quote(rule(low, high), usage)


def test_complex_tier_prices_at_the_top_of_the_range() -> None:
    assert Quote(10, 10, 10) == quote(rule(3, 10), Usage(Complexity.COMPLEX))


def test_simple_tier_prices_at_the_bottom_of_the_range() -> None:
    assert Quote(3, 3, 3) == quote(rule(3, 10), Usage(Complexity.SIMPLE))


@pytest.mark.parametrize(
    ("low", "high", "expected_middle"),
    [
        (0, 0, 0),
        (0, 1, 1),  # 0.5 rounds up
        (0, 2, 1),
        (0, 3, 2),  # 1.5 rounds up
        (0, 4, 2),
        (5, 10, 8),  # 7.5 rounds up
        (10, 11, 11),
        (0, 999_999, 500_000),
    ],
)
def test_the_middle_of_a_range_rounds_half_up(low: int, high: int, expected_middle: int) -> None:
    middle = quote(rule(low, high), Usage(Complexity.STANDARD))
    assert Quote(expected_middle, expected_middle, expected_middle) == middle


@pytest.mark.parametrize(
    ("unit", "usage", "expected"),
    [
        (CostUnit.CALL, Usage(platforms=4, items=7), Quote(1, 2, 3)),
        (CostUnit.PLATFORM, Usage(platforms=4, items=7), Quote(4, 8, 12)),
        (CostUnit.PLATFORM, Usage(platforms=0, items=7), Quote(1, 2, 3)),
        (CostUnit.ITEM, Usage(platforms=4, items=7), Quote(7, 14, 21)),
        (CostUnit.ITEM, Usage(platforms=4, items=0), Quote(1, 2, 3)),
        (CostUnit.ITEM, Usage(Complexity.COMPLEX, items=7), Quote(21, 21, 21)),
        (CostUnit.PLATFORM, Usage(length=Length.MEDIUM, platforms=3), Quote(6, 6, 6)),
    ],
)
def test_the_range_is_per_unit_and_zero_units_count_as_one(
    unit: CostUnit, usage: Usage, expected: Quote
) -> None:
    assert expected == quote(rule(1, 3, unit), usage)


@pytest.mark.parametrize(
    "usage",
    [
        Usage(),
        Usage(Complexity.COMPLEX, Length.LONG, platforms=50, items=10_000),
    ],
)
def test_a_free_rule_quotes_zero_whatever_the_usage(usage: Usage) -> None:
    assert Quote(0, 0, 0) == quote(rule(0, 0, CostUnit.ITEM), usage)


@pytest.mark.parametrize(
    ("usage", "expected_fields"),
    [
        (Usage(platforms=-1), ["usage.platforms"]),
        (Usage(platforms=51), ["usage.platforms"]),
        (Usage(items=-1), ["usage.items"]),
        (Usage(items=10_001), ["usage.items"]),
        (Usage(complexity=7), ["usage.complexity"]),  # type: ignore[arg-type]
        (Usage(length=-1), ["usage.length"]),  # type: ignore[arg-type]
        (
            Usage(complexity=9, length=9, platforms=99, items=-5),  # type: ignore[arg-type]
            ["usage.complexity", "usage.length", "usage.platforms", "usage.items"],
        ),
    ],
)
def test_a_bad_usage_names_every_bad_field(usage: Usage, expected_fields: list[str]) -> None:
    with pytest.raises(errors.MeterError) as caught:
        validate_usage(usage)
    assert errors.Kind.INVALID == caught.value.kind
    assert expected_fields == [v.field for v in caught.value.violations]


def test_validate_usage_prefixes_the_field_names() -> None:
    with pytest.raises(errors.MeterError) as caught:
        validate_usage(Usage(items=-1), field_prefix="items[3].usage")
    assert ["items[3].usage.items"] == [v.field for v in caught.value.violations]


@pytest.mark.parametrize(
    "usage",
    [Usage(), Usage(Complexity.COMPLEX, Length.LONG, platforms=50, items=10_000), Usage(2, 3)],  # type: ignore[arg-type]
)
def test_a_good_usage_passes(usage: Usage) -> None:
    validate_usage(usage)


def test_quoting_a_bad_usage_is_refused() -> None:
    with pytest.raises(errors.MeterError) as caught:
        quote(rule(1, 3, CostUnit.ITEM), Usage(items=-3))
    assert "INVALID_ARGUMENT" == caught.value.reason


def test_a_catalog_names_the_unknown_operation_and_its_version() -> None:
    catalog = Catalog(3, {"test.op": rule(1, 3)})
    assert rule(1, 3) == catalog.rule("test.op")
    with pytest.raises(errors.MeterError) as caught:
        catalog.rule("nope")
    assert ("OPERATION_NOT_FOUND", {"operation": "nope"}) == (
        caught.value.reason,
        caught.value.metadata,
    )
    assert "version 3" in caught.value.message


def test_a_catalog_cannot_be_changed_after_it_is_built() -> None:
    rules = {"test.op": rule(1, 3)}
    catalog = Catalog(1, rules)
    rules["other"] = rule(0, 0)
    assert ["test.op"] == list(catalog.rules)
    with pytest.raises(TypeError):
        catalog.rules["other"] = rule(0, 0)  # type: ignore[index]


@pytest.mark.parametrize(
    ("low", "high", "free"), [(2, 1, False), (-1, 1, False), (0, 0, False), (0, 1, True)]
)
def test_a_rule_refuses_to_break_its_invariants(low: int, high: int, free: bool) -> None:
    with pytest.raises(ValueError, match=r"test\.op"):
        Rule("test.op", "Test", "", low, high, CostUnit.CALL, free)
