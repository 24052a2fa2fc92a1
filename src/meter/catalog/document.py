"""Catalog documents: the TOML or JSON text PublishCatalog (and defaults.toml) is written in.

One shape for both formats::

    [operations."content.generate_post"]
    display_name = "Content generation (per post)"   # optional, defaults to the key
    description = "One social post written by the AI."  # optional
    min = 1                                          # credits per unit, required
    max = 3                                          # credits per unit, required
    unit = "item"                                    # call | platform | item; default call

A document is checked whole: every violation is collected (named like
``operations["content.generate_post"].max``) and reported in one INVALID_CATALOG error.
"""

from __future__ import annotations

import json
import re
import tomllib
from collections.abc import Mapping
from typing import Any

from meter import errors
from meter.catalog.model import CostUnit, Rule

REASON = "INVALID_CATALOG"
MAX_DOCUMENT_BYTES = 1 << 20
MAX_OPERATIONS = 1000
MAX_COST = 1_000_000
MAX_DISPLAY_NAME = 200
MAX_DESCRIPTION = 1000
# The violations go back in gRPC trailers (BadRequest details and the status message),
# which clients cap at 8 KiB by default; past this many, the rest are summarised in one.
MAX_REPORTED_VIOLATIONS = 25

_OPERATION_KEY = re.compile(r"[a-z][a-z0-9._-]{0,63}")
_RULE_FIELDS = frozenset({"display_name", "description", "min", "max", "unit"})
_UNITS = ", ".join(unit.value for unit in CostUnit)

FieldViolation = errors.FieldViolation


def parse_document(text: str, fmt: str | None) -> dict[str, Rule]:
    """Parse and validate a catalog document into its rules, in document order.

    Args:
        text: the document.
        fmt: "toml", "json", or None to guess (JSON when the text starts with "{").

    Raises:
        MeterError: INVALID / INVALID_CATALOG naming every bad rule field, or the document
            itself (syntax, size) under the field "document".
    """
    fmt = _format(text, fmt)
    if len(text.encode("utf-8", errors="surrogatepass")) > MAX_DOCUMENT_BYTES:
        raise _invalid(
            [FieldViolation("document", f"must be at most {MAX_DOCUMENT_BYTES} bytes (1 MiB)")]
        )
    violations: list[FieldViolation] = []
    data = _load_json(text, violations) if fmt == "json" else _load_toml(text, violations)
    if data is None:
        raise _invalid(violations)
    rules = _read_operations(data, violations)
    if violations:
        raise _invalid(violations)
    return rules


def _format(text: str, fmt: str | None) -> str:
    if fmt is None or fmt == "":
        return "json" if text.lstrip().startswith("{") else "toml"
    lowered = fmt.lower()
    if lowered not in ("toml", "json"):
        raise _invalid([FieldViolation("format", f"unknown format {fmt!r}; use toml or json")])
    return lowered


def _load_toml(text: str, violations: list[FieldViolation]) -> dict[str, Any] | None:
    try:
        # tomllib's message already ends with "(at line L, column C)".
        return tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        violations.append(FieldViolation("document", f"invalid TOML: {exc}"))
        return None


def _load_json(text: str, violations: list[FieldViolation]) -> dict[str, Any] | None:
    duplicates: list[str] = []

    def no_duplicates(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
        # json keeps the last of repeated keys silently; a catalog must not hide a rule.
        seen: dict[str, Any] = {}
        for key, value in pairs:
            if key in seen:
                duplicates.append(key)
            seen[key] = value
        return seen

    try:
        data = json.loads(text, object_pairs_hook=no_duplicates)
    except json.JSONDecodeError as exc:
        violations.append(
            FieldViolation(
                "document", f"invalid JSON: {exc.msg} (at line {exc.lineno}, column {exc.colno})"
            )
        )
        return None
    violations.extend(FieldViolation("document", f"duplicate key {key!r}") for key in duplicates)
    if not isinstance(data, dict):
        violations.append(FieldViolation("document", "must be a JSON object"))
        return None
    return data


def _read_operations(data: Mapping[str, Any], violations: list[FieldViolation]) -> dict[str, Rule]:
    violations.extend(
        FieldViolation(_short(key), "unknown field; a document has only [operations]")
        for key in data
        if key != "operations"
    )
    operations = data.get("operations")
    if operations is None:
        violations.append(FieldViolation("operations", "no operations"))
        return {}
    if not isinstance(operations, dict):
        violations.append(FieldViolation("operations", "must be a table of operations"))
        return {}
    if not operations:
        violations.append(FieldViolation("operations", "no operations"))
    if len(operations) > MAX_OPERATIONS:
        violations.append(
            FieldViolation(
                "operations", f"at most {MAX_OPERATIONS} operations, got {len(operations)}"
            )
        )
    rules: dict[str, Rule] = {}
    for key, body in operations.items():
        rule = _read_rule(key, body, violations)
        if rule is not None:
            rules[key] = rule
    return rules


def _read_rule(key: str, body: object, violations: list[FieldViolation]) -> Rule | None:
    path = f"operations[{_quoted(key)}]"
    before = len(violations)
    if not _OPERATION_KEY.fullmatch(key):
        violations.append(
            FieldViolation(
                path, "operation key must be 1-64 characters of [a-z0-9._-] starting with a letter"
            )
        )
    if not isinstance(body, dict):
        violations.append(FieldViolation(path, "must be a table with min and max"))
        return None
    violations.extend(
        FieldViolation(f"{path}.{_short(name)}", _unknown_field(value))
        for name, value in body.items()
        if name not in _RULE_FIELDS
    )
    display_name = _text(body, "display_name", MAX_DISPLAY_NAME, path, violations) or key
    description = _text(body, "description", MAX_DESCRIPTION, path, violations)
    low = _cost(body, "min", path, violations)
    high = _cost(body, "max", path, violations)
    if low is not None and high is not None and high < low:
        violations.append(FieldViolation(f"{path}.max", f"must be >= min ({low})"))
    unit = _unit(body, path, violations)
    if len(violations) > before or low is None or high is None or unit is None:
        return None
    return Rule(key, display_name, description, low, high, unit, free=high == 0)


def _unknown_field(value: object) -> str:
    if isinstance(value, dict):
        # [operations.content.generate_post] nests tables; the key needs quotes.
        return 'unknown field (quote dotted keys: [operations."content.generate_post"])'
    return "unknown field"


def _text(
    body: Mapping[str, object],
    name: str,
    limit: int,
    path: str,
    violations: list[FieldViolation],
) -> str:
    value = body.get(name, "")
    if not isinstance(value, str):
        violations.append(FieldViolation(f"{path}.{name}", "must be a string"))
        return ""
    if len(value) > limit:
        violations.append(FieldViolation(f"{path}.{name}", f"must be at most {limit} characters"))
    return value


def _cost(
    body: Mapping[str, object], name: str, path: str, violations: list[FieldViolation]
) -> int | None:
    field = f"{path}.{name}"
    if name not in body:
        violations.append(FieldViolation(field, "required"))
        return None
    value = body[name]
    # bool is an int in Python, and `min = true` is surely a mistake.
    if not isinstance(value, int) or isinstance(value, bool):
        violations.append(FieldViolation(field, "must be an integer number of credits"))
        return None
    if value < 0:
        violations.append(FieldViolation(field, "must not be negative"))
        return None
    if value > MAX_COST:
        violations.append(FieldViolation(field, f"must be at most {MAX_COST}"))
        return None
    return value


def _unit(
    body: Mapping[str, object], path: str, violations: list[FieldViolation]
) -> CostUnit | None:
    value = body.get("unit", CostUnit.CALL.value)
    if isinstance(value, str) and value in set(CostUnit):
        return CostUnit(value)
    violations.append(
        FieldViolation(f"{path}.unit", f"unknown unit {value!r}; expected one of {_UNITS}")
    )
    return None


def _quoted(key: str) -> str:
    return json.dumps(_short(key), ensure_ascii=False)


def _short(name: str) -> str:
    # Keys are echoed back in field paths; a hostile 1 MiB key must not become one.
    return name if len(name) <= 80 else name[:77] + "..."


def _invalid(violations: list[FieldViolation]) -> errors.MeterError:
    if len(violations) > MAX_REPORTED_VIOLATIONS:
        shown = violations[: MAX_REPORTED_VIOLATIONS - 1]
        rest = len(violations) - len(shown)
        violations = [*shown, FieldViolation("document", f"and {rest} more violations")]
    return errors.invalid(violations, reason=REASON)
