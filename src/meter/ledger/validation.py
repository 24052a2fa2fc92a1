"""Input rules shared by every request: ids, labels, amounts, durations, usages.

Each check appends FieldViolations so one error can name every bad field at once; a request
raises them together, as one INVALID error, once all its fields are checked.
"""

from __future__ import annotations

import re
from collections.abc import Mapping

from meter import errors
from meter.catalog.model import Usage
from meter.catalog.pricing import validate_usage
from meter.errors import FieldViolation

ID_RE = re.compile(r"[A-Za-z0-9._:-]{1,128}")
ACTOR_RE = re.compile(r"[A-Za-z0-9._:@+-]{1,128}")
LABEL_KEY_RE = re.compile(r"[a-z][a-z0-9_.-]{0,62}")
SOURCE_RE = re.compile(r"[a-z][a-z0-9_-]{0,63}")
MAX_LABELS = 16
MAX_LABEL_VALUE = 256
MAX_CREDITS = 10**12  # far above any balance; keeps sums far from int64 overflow
MAX_TEXT = 500


class Violations(list[FieldViolation]):
    """Collects a request's bad fields."""

    def add(self, field: str, description: str) -> None:
        self.append(FieldViolation(field, description))

    def id(self, field: str, value: str, *, required: bool = True) -> None:
        if not value:
            if required:
                self.add(field, "required: 1-128 characters of [A-Za-z0-9._:-]")
        elif not ID_RE.fullmatch(value):
            self.add(field, "must be 1-128 characters of [A-Za-z0-9._:-]")

    def actor(self, field: str, value: str) -> None:
        if value and not ACTOR_RE.fullmatch(value):
            self.add(field, "must be at most 128 characters of [A-Za-z0-9._:@+-]")

    def labels(self, field: str, labels: Mapping[str, str]) -> None:
        if len(labels) > MAX_LABELS:
            self.add(field, f"at most {MAX_LABELS} labels")
            return
        for key, value in labels.items():
            if not LABEL_KEY_RE.fullmatch(key):
                self.add(
                    f"{field}[{key[:64]!r}]",
                    "keys are 1-63 characters of [a-z0-9_.-], starting with a letter",
                )
            elif len(value) > MAX_LABEL_VALUE:
                self.add(f"{field}[{key!r}]", f"values are at most {MAX_LABEL_VALUE} characters")
            elif not value.isprintable():
                self.add(f"{field}[{key!r}]", "values must be printable text")

    def credits(self, field: str, value: int, *, positive: bool = False) -> None:
        low = 1 if positive else 0
        if not low <= value <= MAX_CREDITS:
            self.add(field, f"must be between {low} and {MAX_CREDITS}")

    def seconds(self, field: str, value: float, low: float, high: float) -> None:
        if not low <= value <= high:
            self.add(field, f"must be between {low:g}s and {high:g}s")

    def text(
        self, field: str, value: str, *, required: bool = False, limit: int = MAX_TEXT
    ) -> None:
        if required and not value.strip():
            self.add(field, "required")
        elif len(value) > limit:
            self.add(field, f"at most {limit} characters")
        elif value and not value.isprintable():
            self.add(field, "must be printable text")

    def usage(self, usage: Usage | None) -> None:
        """A usage's own rules (meter.catalog.pricing), under the usage's field names."""
        if usage is not None:
            try:
                validate_usage(usage)
            except errors.MeterError as e:
                self.extend(e.violations)

    def raise_if_any(self) -> None:
        """Raises: MeterError INVALID naming every bad field, when there is one."""
        if self:
            raise errors.invalid(list(self))


def request_fields(
    workspace_id: str, request_id: str, actor_id: str, labels: Mapping[str, str]
) -> Violations:
    """The checks a ledger request starts with: its workspace, request id, actor and labels."""
    v = Violations()
    v.id("workspace_id", workspace_id)
    v.id("request_id", request_id)
    v.actor("actor_id", actor_id)
    v.labels("labels", labels)
    return v
