"""Domain errors: what went wrong, in the vocabulary of DESIGN.md's error table.

Every refusal the service can give is one of these. The transport maps each kind to a gRPC
status in one table (meter.rpc.errors); domain code raises them and never thinks of codes.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from enum import Enum


class Kind(Enum):
    """The category of a refusal; it decides the status code."""

    INVALID = "invalid"  # INVALID_ARGUMENT
    NOT_FOUND = "not_found"  # NOT_FOUND
    PRECONDITION = "precondition"  # FAILED_PRECONDITION
    ABORTED = "aborted"  # ABORTED (retry)
    EXHAUSTED = "exhausted"  # RESOURCE_EXHAUSTED (retry later)
    UNAVAILABLE = "unavailable"  # UNAVAILABLE (retry)
    DEADLINE = "deadline"  # DEADLINE_EXCEEDED
    UNAUTHENTICATED = "unauthenticated"
    PERMISSION = "permission"  # PERMISSION_DENIED
    UNIMPLEMENTED = "unimplemented"  # UNIMPLEMENTED
    INTERNAL = "internal"  # INTERNAL: a bug, never a refusal


@dataclass(frozen=True, slots=True)
class FieldViolation:
    """One bad field of a request (becomes a google.rpc.BadRequest violation)."""

    field: str
    description: str


@dataclass(slots=True)
class MeterError(Exception):
    """A refusal: nothing was written.

    Attributes:
        kind: the category (decides the status code).
        reason: the ErrorInfo reason, UPPER_SNAKE_CASE (e.g. INSUFFICIENT_CREDITS).
        message: a sentence for humans.
        metadata: ErrorInfo metadata (string values).
        violations: bad fields, for INVALID.
        retry_after: seconds a client should wait before retrying, for retryable kinds.
    """

    kind: Kind
    reason: str
    message: str
    metadata: Mapping[str, str] = field(default_factory=dict)
    violations: Sequence[FieldViolation] = ()
    retry_after: float | None = None

    def __post_init__(self) -> None:
        Exception.__init__(self, self.message)

    def __str__(self) -> str:
        return self.message


def invalid(violations: Sequence[FieldViolation], reason: str = "INVALID_ARGUMENT") -> MeterError:
    """A malformed request; the message lists the bad fields."""
    text = "; ".join(f"{v.field}: {v.description}" for v in violations)
    return MeterError(Kind.INVALID, reason, f"invalid request: {text}", violations=violations)


def invalid_field(name: str, description: str, reason: str = "INVALID_ARGUMENT") -> MeterError:
    """A malformed request with one bad field."""
    return invalid([FieldViolation(name, description)], reason)


def request_id_reused(request_id: str) -> MeterError:
    """The request id was used before with other parameters; this request did not run."""
    return MeterError(
        Kind.INVALID,
        "REQUEST_ID_REUSED",
        f"request_id {request_id!r} was already used with other parameters; nothing was done",
        violations=[FieldViolation("request_id", "already used with other parameters")],
    )


def not_found(reason: str, message: str, **metadata: str) -> MeterError:
    """Unknown workspace, hold, operation, package, ..."""
    return MeterError(Kind.NOT_FOUND, reason, message, metadata=metadata)


def workspace_not_found(workspace_id: str) -> MeterError:
    return not_found(
        "WORKSPACE_NOT_FOUND", f"workspace {workspace_id!r} not found", workspace_id=workspace_id
    )


def hold_not_found(workspace_id: str, request_id: str) -> MeterError:
    return not_found(
        "HOLD_NOT_FOUND",
        f"no hold with request_id {request_id!r} in workspace {workspace_id!r}",
        workspace_id=workspace_id,
        request_id=request_id,
    )


def operation_not_found(operation: str, version: int | None = None) -> MeterError:
    where = f" in catalog version {version}" if version else ""
    return not_found(
        "OPERATION_NOT_FOUND", f"unknown operation {operation!r}{where}", operation=operation
    )


def package_not_found(name: str, known: Sequence[str]) -> MeterError:
    return not_found(
        "PACKAGE_NOT_FOUND",
        f"unknown package {name!r}; packages are {', '.join(known)}",
        package=name,
    )


def precondition(reason: str, message: str, **metadata: str) -> MeterError:
    return MeterError(Kind.PRECONDITION, reason, message, metadata=metadata)


def aborted(reason: str, message: str, retry_after: float = 0.05) -> MeterError:
    return MeterError(Kind.ABORTED, reason, message, retry_after=retry_after)


def unavailable(message: str, retry_after: float = 0.5) -> MeterError:
    return MeterError(Kind.UNAVAILABLE, "UNAVAILABLE", message, retry_after=retry_after)


def exhausted(reason: str, message: str, retry_after: float = 0.05) -> MeterError:
    return MeterError(Kind.EXHAUSTED, reason, message, retry_after=retry_after)
