"""Pricing: what one call of an operation costs for a usage.

A rule is a range ``[min, max]`` of credits **per unit**:

| rule unit  | units counted                      |
|------------|------------------------------------|
| `call`     | 1                                  |
| `platform` | ``usage.platforms`` (0 counts as 1) |
| `item`     | ``usage.items`` (0 counts as 1)     |

The usage's tier picks the point in the range. Each tier is a fraction ``f`` of the way
from ``min`` to ``max``:

| complexity | length | f   |
|------------|--------|-----|
| SIMPLE     | SHORT  | 0   |
| STANDARD   | MEDIUM | 1/2 |
| COMPLEX    | LONG   | 1   |

When both complexity and length are given the larger fraction wins (the costlier aspect
decides). The point is ``min + floor((max - min) * f + 1/2)``, i.e. rounded half up, computed
in integer halves (no floats): 1-3 → 1, 2, 3; 3-10 → 3, 7, 10; 2-5 → 2, 4, 5; 1-2 → 1, 2, 2.

* No tier given: the cost is not known yet, so the quote spans the range:
  ``min = min * units``, ``expected = point(1/2) * units``, ``max = max * units``.
* A tier given: the cost is known, ``min = expected = max = point(f) * units``.
* A free rule (min = max = 0) quotes 0 / 0 / 0 whatever the usage.
"""

from __future__ import annotations

from enum import IntEnum

from meter import errors
from meter.catalog.model import Complexity, CostUnit, Length, Quote, Rule, Usage

MAX_PLATFORMS = 50
MAX_ITEMS = 10_000

# A tier's fraction of the range, in halves (0/2, 1/2, 2/2).
_COMPLEXITY_HALVES = {Complexity.SIMPLE: 0, Complexity.STANDARD: 1, Complexity.COMPLEX: 2}
_LENGTH_HALVES = {Length.SHORT: 0, Length.MEDIUM: 1, Length.LONG: 2}
_MIDDLE = 1


def validate_usage(usage: Usage, field_prefix: str = "usage") -> None:
    """Check a usage, naming every bad field at once.

    Raises:
        MeterError: INVALID with one violation per bad field (``usage.platforms``, ...):
            unknown complexity or length, platforms outside 0..50, items outside 0..10000.
    """
    violations: list[errors.FieldViolation] = []
    if not _is_member(usage.complexity, Complexity):
        violations.append(
            errors.FieldViolation(
                f"{field_prefix}.complexity", f"unknown complexity {usage.complexity!r}"
            )
        )
    if not _is_member(usage.length, Length):
        violations.append(
            errors.FieldViolation(f"{field_prefix}.length", f"unknown length {usage.length!r}")
        )
    if not _in_range(usage.platforms, 0, MAX_PLATFORMS):
        violations.append(
            errors.FieldViolation(
                f"{field_prefix}.platforms", f"must be between 0 and {MAX_PLATFORMS}"
            )
        )
    if not _in_range(usage.items, 0, MAX_ITEMS):
        violations.append(
            errors.FieldViolation(f"{field_prefix}.items", f"must be between 0 and {MAX_ITEMS}")
        )
    if violations:
        raise errors.invalid(violations)


def quote(rule: Rule, usage: Usage) -> Quote:
    """Price one call of `rule` for `usage` (see the module docstring for the semantics).

    Raises:
        MeterError: INVALID when the usage is malformed (see validate_usage).
    """
    validate_usage(usage)
    if rule.free:
        return Quote(0, 0, 0)
    units = _units(rule.unit, usage)
    halves = _tier_halves(usage)
    if halves is None:
        return Quote(
            min=rule.min * units,
            expected=_point(rule, _MIDDLE) * units,
            max=rule.max * units,
        )
    cost = _point(rule, halves) * units
    return Quote(cost, cost, cost)


def _units(unit: CostUnit, usage: Usage) -> int:
    if unit is CostUnit.PLATFORM:
        return usage.platforms or 1
    if unit is CostUnit.ITEM:
        return usage.items or 1
    return 1


def _tier_halves(usage: Usage) -> int | None:
    """The usage's fraction of the range in halves, or None when it names no tier."""
    given = [
        halves
        for halves in (
            _COMPLEXITY_HALVES.get(Complexity(usage.complexity)),
            _LENGTH_HALVES.get(Length(usage.length)),
        )
        if halves is not None
    ]
    return max(given) if given else None


def _point(rule: Rule, halves: int) -> int:
    # min + floor((max - min) * halves/2 + 1/2), multiplied through by 2 to stay in integers.
    return rule.min + ((rule.max - rule.min) * halves + 1) // 2


def _is_member(value: object, enum: type[IntEnum]) -> bool:
    # Converters may hand over the raw proto number of a value this code does not know.
    return isinstance(value, int) and not isinstance(value, bool) and value in set(enum)


def _in_range(value: object, low: int, high: int) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and low <= value <= high
