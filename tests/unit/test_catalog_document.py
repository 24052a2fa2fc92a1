"""Catalog documents (PublishCatalog, defaults.toml): parsing, validation and the defaults."""

# STYLE.md writes `expected == actual`; ruff's SIM300 (Yoda conditions) wants the reverse.

from __future__ import annotations

import json

import pytest

from meter import errors
from meter.catalog.defaults import (
    DEFAULT_PACKAGES,
    default_catalog_document,
    find_package,
    load_default_catalog_rules,
    smallest_package_covering,
)
from meter.catalog.document import MAX_REPORTED_VIOLATIONS, parse_document
from meter.catalog.model import CostUnit, Package, Rule

GOOD_TOML = """
[operations."content.generate_post"]
display_name = "Content generation (per post)"
description = "One post."
min = 1
max = 3
unit = "item"

[operations."posts.publish"]
min = 0
max = 0
"""

EXPECTED_GOOD_RULES = {
    "content.generate_post": Rule(
        "content.generate_post",
        "Content generation (per post)",
        "One post.",
        1,
        3,
        CostUnit.ITEM,
        free=False,
    ),
    "posts.publish": Rule("posts.publish", "posts.publish", "", 0, 0, CostUnit.CALL, free=True),
}

GOOD_JSON = json.dumps(
    {
        "operations": {
            "content.generate_post": {
                "display_name": "Content generation (per post)",
                "description": "One post.",
                "min": 1,
                "max": 3,
                "unit": "item",
            },
            "posts.publish": {"min": 0, "max": 0},
        }
    }
)


@pytest.mark.parametrize(
    ("text", "fmt"),
    [
        (GOOD_TOML, "toml"),
        (GOOD_TOML, None),
        (GOOD_TOML, "TOML"),
        (GOOD_JSON, "json"),
        (GOOD_JSON, None),
        ("\n  " + GOOD_JSON, None),
    ],
)
def test_a_good_document_parses_in_either_format(text: str, fmt: str | None) -> None:
    assert EXPECTED_GOOD_RULES == parse_document(text, fmt)


def test_the_rules_keep_the_document_order() -> None:
    assert ["content.generate_post", "posts.publish"] == list(parse_document(GOOD_TOML, None))


def violations_of(text: str, fmt: str | None = None) -> list[errors.FieldViolation]:
    with pytest.raises(errors.MeterError) as caught:
        parse_document(text, fmt)
    assert (errors.Kind.INVALID, "INVALID_CATALOG") == (caught.value.kind, caught.value.reason)
    return list(caught.value.violations)


def fields_of(text: str, fmt: str | None = None) -> list[str]:
    return [violation.field for violation in violations_of(text, fmt)]


UNITS = "expected one of call, platform, item"


def toml_rule(body: str, key: str = "op.a") -> str:
    return f'[operations."{key}"]\n{body}\n'


@pytest.mark.parametrize(
    ("body", "expected"),
    [
        ("min = 1", ('operations["op.a"].max', "required")),
        ("max = 1", ('operations["op.a"].min', "required")),
        ('min = "1"\nmax = 2', ('operations["op.a"].min', "must be an integer number of credits")),
        ("min = 1.5\nmax = 2", ('operations["op.a"].min', "must be an integer number of credits")),
        ("min = true\nmax = 2", ('operations["op.a"].min', "must be an integer number of credits")),
        ("min = -1\nmax = 2", ('operations["op.a"].min', "must not be negative")),
        ("min = 0\nmax = -2", ('operations["op.a"].max', "must not be negative")),
        ("min = 3\nmax = 1", ('operations["op.a"].max', "must be >= min (3)")),
        ("min = 1\nmax = 1000001", ('operations["op.a"].max', "must be at most 1000000")),
        (
            'min = 1\nmax = 2\nunit = "post"',
            (
                'operations["op.a"].unit',
                "unknown unit 'post'; expected one of call, platform, item",
            ),
        ),
        (
            "min = 1\nmax = 2\nunit = 3",
            ('operations["op.a"].unit', "unknown unit 3; expected one of call, platform, item"),
        ),
        ("min = 1\nmax = 2\ncost = 3", ('operations["op.a"].cost', "unknown field")),
        (
            "min = 1\nmax = 2\ndisplay_name = '" + "x" * 201 + "'",
            ('operations["op.a"].display_name', "must be at most 200 characters"),
        ),
        (
            "min = 1\nmax = 2\ndisplay_name = 5",
            ('operations["op.a"].display_name', "must be a string"),
        ),
        (
            "min = 1\nmax = 2\ndescription = '" + "x" * 1001 + "'",
            ('operations["op.a"].description', "must be at most 1000 characters"),
        ),
    ],
)
def test_a_bad_rule_field_is_named_with_its_rule(body: str, expected: tuple[str, str]) -> None:
    [violation] = violations_of(toml_rule(body))
    assert expected == (violation.field, violation.description)


def test_the_longest_display_name_and_description_are_accepted() -> None:
    body = f"min = 1\nmax = 2\ndisplay_name = '{'x' * 200}'\ndescription = '{'y' * 1000}'"
    assert 200 == len(parse_document(toml_rule(body), "toml")["op.a"].display_name)


def test_the_largest_cost_is_accepted() -> None:
    assert 1_000_000 == parse_document(toml_rule("min = 0\nmax = 1000000"), None)["op.a"].max


@pytest.mark.parametrize(
    "key", ["", "Content.post", "1st.op", ".op", "op a", "op/a", "é", "a" * 65]
)
def test_a_bad_operation_key_is_refused(key: str) -> None:
    document = json.dumps({"operations": {key: {"min": 1, "max": 1}}})
    [violation] = violations_of(document)
    assert f"operations[{json.dumps(key, ensure_ascii=False)}]" == violation.field
    assert "1-64 characters" in violation.description


@pytest.mark.parametrize("key", ["a", "a" * 64, "content.generate_post", "a-b_c.9"])
def test_a_good_operation_key_is_accepted(key: str) -> None:
    assert [key] == list(
        parse_document(json.dumps({"operations": {key: {"min": 0, "max": 0}}}), None)
    )


def test_every_violation_of_a_document_is_collected() -> None:
    document = (
        toml_rule("min = 3\nmax = 1\nunit = 'post'\nextra = 1", key="op.a")
        + toml_rule("max = 2", key="op.b")
        + toml_rule("min = 1\nmax = 1", key="Bad")
        + toml_rule("min = 1\nmax = 2", key="op.good")
    )
    expected = [
        'operations["op.a"].extra',
        'operations["op.a"].max',
        'operations["op.a"].unit',
        'operations["op.b"].min',
        'operations["Bad"]',
    ]
    assert expected == fields_of(document)


@pytest.mark.parametrize(
    ("text", "fmt", "expected"),
    [
        ("", None, ("operations", "no operations")),
        ("[operations]\n", "toml", ("operations", "no operations")),
        ('{"operations": {}}', None, ("operations", "no operations")),
        ('{"operations": []}', None, ("operations", "must be a table of operations")),
        (
            '{"operations": {"op.a": 3}}',
            None,
            ('operations["op.a"]', "must be a table with min and max"),
        ),
        ("[1, 2]", "json", ("document", "must be a JSON object")),
        (
            'version = 2\n[operations."op.a"]\nmin = 1\nmax = 1',
            None,
            ("version", "unknown field; a document has only [operations]"),
        ),
        ("{}", "yaml", ("format", "unknown format 'yaml'; use toml or json")),
    ],
)
def test_a_bad_document_shape_is_named(
    text: str, fmt: str | None, expected: tuple[str, str]
) -> None:
    [violation] = violations_of(text, fmt)
    assert expected == (violation.field, violation.description)


def test_a_toml_syntax_error_names_the_document_with_line_and_column() -> None:
    [violation] = violations_of('[operations."op.a"]\nmin = = 1\n', "toml")
    assert "document" == violation.field
    assert "line 2, column" in violation.description


def test_a_json_syntax_error_names_the_document_with_line_and_column() -> None:
    [violation] = violations_of('{\n  "operations": {,}\n}', None)
    assert "document" == violation.field
    assert "invalid JSON" in violation.description
    assert "line 2, column 18" in violation.description


def test_a_json_document_in_toml_format_is_a_toml_syntax_error() -> None:
    assert ["document"] == fields_of(GOOD_JSON, "toml")


def test_a_duplicated_json_key_is_refused_rather_than_silently_dropped() -> None:
    document = '{"operations": {"op.a": {"min": 1, "max": 1}, "op.a": {"min": 2, "max": 2}}}'
    [violation] = violations_of(document)
    assert ("document", "duplicate key 'op.a'") == (violation.field, violation.description)


def test_an_unquoted_dotted_toml_key_gets_a_hint() -> None:
    violations = violations_of("[operations.op.a]\nmin = 1\nmax = 1\n")
    assert 'operations["op"].a' == violations[0].field
    assert "quote dotted keys" in violations[0].description


def test_more_than_a_thousand_operations_are_refused() -> None:
    document = json.dumps({"operations": {f"op.{i}": {"min": 1, "max": 1} for i in range(1001)}})
    assert ["operations"] == fields_of(document)


def test_a_thousand_operations_are_accepted() -> None:
    document = json.dumps({"operations": {f"op.{i}": {"min": 1, "max": 1} for i in range(1000)}})
    assert 1000 == len(parse_document(document, "json"))


def test_a_document_over_one_mebibyte_is_refused_before_parsing() -> None:
    document = GOOD_TOML + "#" * (1 << 20)
    [violation] = violations_of(document, "toml")
    assert "document" == violation.field
    assert "1 MiB" in violation.description


def test_a_flood_of_violations_is_reported_in_a_bounded_error() -> None:
    """All are checked, but gRPC trailers are small: the tail is summarised in one violation."""
    document = json.dumps({"operations": {f"op.{i}": {"min": 2, "max": 1} for i in range(100)}})
    violations = violations_of(document)
    assert MAX_REPORTED_VIOLATIONS == len(violations)
    assert ("document", "and 76 more violations") == (
        violations[-1].field,
        violations[-1].description,
    )


DEFAULT_COSTS = {
    "campaign.create_strategy": (3, 10, CostUnit.CALL),
    "content.generate_post": (1, 3, CostUnit.ITEM),
    "content.regenerate": (1, 3, CostUnit.ITEM),
    "strategy.analyze": (2, 5, CostUnit.CALL),
    "assistant.simple_question": (0, 1, CostUnit.CALL),
    "assistant.complex_analysis": (1, 3, CostUnit.CALL),
    "assistant.create_campaign": (3, 10, CostUnit.CALL),
    "assistant.content_suggestions": (1, 2, CostUnit.CALL),
    "content.generate_single_post": (1, 1, CostUnit.CALL),
    "content.generate_multi_platform": (1, 2, CostUnit.PLATFORM),
    "rss.process_item": (1, 1, CostUnit.ITEM),
    "content.optimize": (1, 2, CostUnit.CALL),
    "campaigns.view": (0, 0, CostUnit.CALL),
    "content.view": (0, 0, CostUnit.CALL),
    "platforms.connect": (0, 0, CostUnit.CALL),
    "posts.schedule": (0, 0, CostUnit.CALL),
    "posts.publish": (0, 0, CostUnit.CALL),
    "settings.access": (0, 0, CostUnit.CALL),
    "analytics.read": (0, 0, CostUnit.CALL),
    "content.edit": (0, 0, CostUnit.CALL),
    "workspaces.manage": (0, 0, CostUnit.CALL),
}


def test_the_default_catalog_has_the_pricing_page_costs() -> None:
    rules = load_default_catalog_rules()
    assert DEFAULT_COSTS == {key: (r.min, r.max, r.unit) for key, r in rules.items()}


def test_every_default_rule_has_a_display_name_and_a_one_line_description() -> None:
    for key, rule in load_default_catalog_rules().items():
        assert rule.display_name != key
        assert rule.description
        assert "\n" not in rule.description


def test_the_free_default_rules_are_exactly_those_costing_nothing() -> None:
    free = {key for key, rule in load_default_catalog_rules().items() if rule.free}
    assert {key for key, (_, high, _) in DEFAULT_COSTS.items() if high == 0} == free


def test_the_default_document_parses_as_a_published_one_would() -> None:
    assert load_default_catalog_rules() == parse_document(default_catalog_document(), None)


def test_the_default_packages_are_the_pricing_page_packages() -> None:
    expected = [
        ("Starter", 100, 1000),
        ("Basic", 250, 2500),
        ("Popular", 550, 5000),
        ("Pro", 1100, 10000),
        ("Max", 2350, 20000),
    ]
    assert expected == [(p.name, p.credits, p.price_cents) for p in DEFAULT_PACKAGES]
    assert {"USD"} == {p.currency for p in DEFAULT_PACKAGES}


@pytest.mark.parametrize(
    ("credits", "expected"),
    [
        (-5, None),
        (0, None),
        (1, "Starter"),
        (100, "Starter"),
        (101, "Basic"),
        (250, "Basic"),
        (551, "Pro"),
        (2350, "Max"),
        (2351, None),
    ],
)
def test_the_smallest_package_covering_a_shortfall_is_suggested(
    credits: int, expected: str | None
) -> None:
    package = smallest_package_covering(DEFAULT_PACKAGES, credits)
    assert expected == (package.name if package else None)


def test_the_smallest_covering_package_does_not_depend_on_the_order() -> None:
    packages = [Package("Big", 500, 1), Package("Small", 50, 1), Package("Mid", 200, 1)]
    assert Package("Mid", 200, 1) == smallest_package_covering(packages, 51)
    assert None is smallest_package_covering([], 1)


def test_a_package_is_found_by_name_in_any_case() -> None:
    assert DEFAULT_PACKAGES[2] == find_package(DEFAULT_PACKAGES, "popular")


def test_an_unknown_package_lists_the_known_ones() -> None:
    with pytest.raises(errors.MeterError) as caught:
        find_package(DEFAULT_PACKAGES, "Mega")
    assert "PACKAGE_NOT_FOUND" == caught.value.reason
    assert "Starter, Basic, Popular, Pro, Max" in caught.value.message
