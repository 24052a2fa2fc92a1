"""Catalog domain types: cost rules, usages, quotes, packages and catalog versions."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from enum import IntEnum, StrEnum
from types import MappingProxyType

from meter import errors


class CostUnit(StrEnum):
    """What an operation's cost is counted per (the spelling used in catalog documents)."""

    CALL = "call"
    PLATFORM = "platform"
    ITEM = "item"


class Complexity(IntEnum):
    """How demanding the content is; values equal the meter.v1.Complexity numbers."""

    UNSPECIFIED = 0
    SIMPLE = 1
    STANDARD = 2
    COMPLEX = 3


class Length(IntEnum):
    """How long the content is; values equal the meter.v1.Length numbers."""

    UNSPECIFIED = 0
    SHORT = 1
    MEDIUM = 2
    LONG = 3


@dataclass(frozen=True, slots=True)
class Usage:
    """What one call of an operation does: the point in the rule's range, and how many units.

    `platforms` and `items` of 0 count as 1 (proto3 cannot tell 0 from unset).
    """

    complexity: Complexity = Complexity.UNSPECIFIED
    length: Length = Length.UNSPECIFIED
    platforms: int = 0
    items: int = 0


@dataclass(frozen=True, slots=True)
class Rule:
    """The cost rule of one operation: [min, max] credits per unit.

    Raises:
        ValueError: the rule breaks its invariants (0 <= min <= max, free iff max == 0);
            catalog documents are validated before rules are built, so this is a bug.
    """

    operation: str
    display_name: str
    description: str
    min: int
    max: int
    unit: CostUnit
    free: bool

    def __post_init__(self) -> None:
        if not 0 <= self.min <= self.max:
            raise ValueError(f"rule {self.operation!r}: need 0 <= min <= max")
        if self.free != (self.max == 0):
            raise ValueError(f"rule {self.operation!r}: free must be exactly min == max == 0")


@dataclass(frozen=True, slots=True)
class Quote:
    """The price of one call: the lowest, likeliest and highest credits it can cost."""

    min: int
    expected: int
    max: int

    def __post_init__(self) -> None:
        if not 0 <= self.min <= self.expected <= self.max:
            raise ValueError(f"quote needs 0 <= min <= expected <= max, got {self}")


@dataclass(frozen=True, slots=True)
class Package:
    """A purchasable bundle of credits."""

    name: str
    credits: int
    price_cents: int
    currency: str = "USD"


@dataclass(frozen=True, slots=True)
class Catalog:
    """One immutable catalog version: a rule per operation key."""

    version: int
    rules: Mapping[str, Rule] = field(default_factory=dict)

    def __post_init__(self) -> None:
        # A read-only copy: a published version must not change under its holds.
        object.__setattr__(self, "rules", MappingProxyType(dict(self.rules)))

    def rule(self, operation: str) -> Rule:
        """The rule of `operation`.

        Raises:
            MeterError: NOT_FOUND / OPERATION_NOT_FOUND when this version has no such rule.
        """
        try:
            return self.rules[operation]
        except KeyError:
            raise errors.operation_not_found(operation, self.version) from None
