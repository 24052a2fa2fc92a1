"""Typed exceptions for Meter's refusals, built from a gRPC status and its rich details.

Every failed call raises a `MeterError` subclass chosen by the ErrorInfo reason first (the
precise case, e.g. `InsufficientCredits`) and by the status code otherwise (`NotFound`,
`Unavailable`, ...), so callers catch what they can act on and read its details as fields.
"""

# The names follow gRPC status codes (as google.api_core.exceptions does), so no Error suffix.
# ruff: noqa: N818

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import grpc
from google.rpc import error_details_pb2, status_pb2

DOMAIN = "meter"
_STATUS_DETAILS_KEY = "grpc-status-details-bin"


@dataclass(frozen=True, slots=True)
class FieldViolation:
    """One bad field of a request, from google.rpc.BadRequest."""

    field: str
    description: str


class MeterError(Exception):
    """A call that Meter refused or that could not reach it.

    Attributes:
        code: the gRPC status code.
        reason: the ErrorInfo reason (e.g. ``INSUFFICIENT_CREDITS``), or the code's name.
        message: the server's sentence for humans.
        metadata: ErrorInfo metadata (string values).
        violations: the bad fields, for invalid requests.
        retry_delay: seconds the server asks to wait before retrying (RetryInfo), if any.
    """

    #: Whether retrying the same request (same request id) later may succeed.
    retryable = False

    def __init__(
        self,
        code: grpc.StatusCode,
        message: str,
        *,
        reason: str = "",
        metadata: Mapping[str, str] | None = None,
        violations: Sequence[FieldViolation] = (),
        retry_delay: float | None = None,
    ) -> None:
        super().__init__(message)
        self.code = code
        self.message = message
        self.reason = reason or code.name
        self.metadata: dict[str, str] = dict(metadata or {})
        self.violations = tuple(violations)
        self.retry_delay = retry_delay

    def __str__(self) -> str:
        return f"{self.reason}: {self.message}"

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.reason!r}, {self.message!r})"


class InvalidArgument(MeterError):
    """A malformed request; `violations` names each bad field."""


class RequestIdReused(InvalidArgument):
    """The request id was used before with other parameters; this request did not run."""


class NotFound(MeterError):
    """An unknown workspace, hold, operation or package."""


class WorkspaceNotFound(NotFound):
    pass


class HoldNotFound(NotFound):
    pass


class OperationNotFound(NotFound):
    pass


class PackageNotFound(NotFound):
    pass


class FailedPrecondition(MeterError):
    """The request is well formed but the ledger's state refuses it."""


class InsufficientCredits(FailedPrecondition):
    """Not enough available credits; nothing was held or charged."""

    @property
    def required(self) -> int:
        return _int(self.metadata.get("required"))

    @property
    def available(self) -> int:
        return _int(self.metadata.get("available"))

    @property
    def shortfall(self) -> int:
        return _int(self.metadata.get("shortfall"))

    @property
    def suggested_package(self) -> str | None:
        """The smallest package that covers the shortfall, if one does."""
        return self.metadata.get("suggested_package") or None


class BudgetExceeded(FailedPrecondition):
    """The request would take a budget its actor or labels fall under past its limit;
    nothing was held. The fields describe the budget with the least room.

    A budget of the `actor_id` key (a member limit) is refused as `MemberLimitReached`, a
    subclass, so `except BudgetExceeded` catches every spend limit.
    """

    @property
    def budget_id(self) -> str:
        return self.metadata.get("budget_id", "")

    @property
    def scope_key(self) -> str:
        """actor_id, or the label key (project, team, ...)."""
        return self.metadata.get("scope_key", "")

    @property
    def scope_value(self) -> str:
        """The request's value of `scope_key` (the actor id, the project, ...)."""
        return self.metadata.get("scope_value", "")

    @property
    def period(self) -> str:
        """day, week, month or total."""
        return self.metadata.get("period", "")

    @property
    def limit(self) -> int:
        return _int(self.metadata.get("limit"))

    @property
    def used(self) -> int:
        """Charged in the period plus held now, before this request."""
        return _int(self.metadata.get("used"))

    @property
    def remaining(self) -> int:
        return _int(self.metadata.get("remaining"))

    @property
    def required(self) -> int:
        """What the refused request asked for."""
        return _int(self.metadata.get("required"))

    @property
    def resets_at(self) -> str:
        """When the period ends (ISO 8601, UTC); empty for a total, which never resets."""
        return self.metadata.get("resets_at", "")


class MemberLimitReached(BudgetExceeded):
    """The member (actor_id) would go past one of its spend limits; nothing was held."""


class GrantNotFound(NotFound):
    pass


class HoldReleased(FailedPrecondition):
    pass


class HoldCommitted(FailedPrecondition):
    pass


class HoldExpired(FailedPrecondition):
    pass


class Aborted(MeterError):
    """A conflict the server could not resolve in time; retry with the same request id."""

    retryable = True


class RequestInProgress(Aborted):
    pass


class ConcurrentUpdate(Aborted):
    pass


class ResourceExhausted(MeterError):
    """Too much in flight (backpressure, rate limit); retry after `retry_delay`."""

    retryable = True


class Overloaded(ResourceExhausted):
    pass


class Unavailable(MeterError):
    """The server (or its database) cannot be reached now; retry with the same request id."""

    retryable = True


class DeadlineExceeded(MeterError):
    """No answer in time: the call may or may not have taken effect; retry to find out."""

    retryable = True


class Unauthenticated(MeterError):
    pass


class PermissionDenied(MeterError):
    pass


class Unimplemented(MeterError):
    """The server does not serve this call (yet)."""


class Internal(MeterError):
    pass


_BY_REASON: dict[str, type[MeterError]] = {
    "REQUEST_ID_REUSED": RequestIdReused,
    "WORKSPACE_NOT_FOUND": WorkspaceNotFound,
    "HOLD_NOT_FOUND": HoldNotFound,
    "OPERATION_NOT_FOUND": OperationNotFound,
    "PACKAGE_NOT_FOUND": PackageNotFound,
    "INSUFFICIENT_CREDITS": InsufficientCredits,
    "MEMBER_LIMIT_REACHED": MemberLimitReached,
    "BUDGET_EXCEEDED": BudgetExceeded,
    "GRANT_NOT_FOUND": GrantNotFound,
    "HOLD_RELEASED": HoldReleased,
    "HOLD_COMMITTED": HoldCommitted,
    "HOLD_EXPIRED": HoldExpired,
    "REQUEST_IN_PROGRESS": RequestInProgress,
    "CONCURRENT_UPDATE": ConcurrentUpdate,
    "OVERLOADED": Overloaded,
}

_BY_CODE: dict[grpc.StatusCode, type[MeterError]] = {
    grpc.StatusCode.INVALID_ARGUMENT: InvalidArgument,
    grpc.StatusCode.OUT_OF_RANGE: InvalidArgument,
    grpc.StatusCode.NOT_FOUND: NotFound,
    grpc.StatusCode.FAILED_PRECONDITION: FailedPrecondition,
    grpc.StatusCode.ABORTED: Aborted,
    grpc.StatusCode.RESOURCE_EXHAUSTED: ResourceExhausted,
    grpc.StatusCode.UNAVAILABLE: Unavailable,
    grpc.StatusCode.DEADLINE_EXCEEDED: DeadlineExceeded,
    grpc.StatusCode.UNAUTHENTICATED: Unauthenticated,
    grpc.StatusCode.PERMISSION_DENIED: PermissionDenied,
    grpc.StatusCode.UNIMPLEMENTED: Unimplemented,
}

_CODES = {c.value[0]: c for c in grpc.StatusCode}


def from_status(status: status_pb2.Status) -> MeterError:
    """The typed exception for a google.rpc.Status (as in a Stream result)."""
    code = _CODES.get(status.code, grpc.StatusCode.UNKNOWN)
    reason, metadata, violations, delay = "", {}, [], None
    for detail in status.details:
        if detail.Is(error_details_pb2.ErrorInfo.DESCRIPTOR):
            info = error_details_pb2.ErrorInfo()
            detail.Unpack(info)
            if info.domain == DOMAIN:
                reason, metadata = info.reason, dict(info.metadata)
        elif detail.Is(error_details_pb2.BadRequest.DESCRIPTOR):
            bad = error_details_pb2.BadRequest()
            detail.Unpack(bad)
            violations = [FieldViolation(v.field, v.description) for v in bad.field_violations]
        elif detail.Is(error_details_pb2.RetryInfo.DESCRIPTOR):
            retry = error_details_pb2.RetryInfo()
            detail.Unpack(retry)
            delay = retry.retry_delay.seconds + retry.retry_delay.nanos / 1e9
    cls = _BY_REASON.get(reason) or _BY_CODE.get(code, Internal)
    return cls(
        code,
        status.message,
        reason=reason,
        metadata=metadata,
        violations=violations,
        retry_delay=delay,
    )


def _write_failed_as_the_call_ended(call: Any) -> bool:
    """grpc.aio reports a request write that fails because the call is ending (a server that
    died mid-stream, say) as a local INTERNAL in place of the call's real status
    (grpc/grpc#36066). No Meter server sends it: its INTERNAL errors carry their details."""
    debug = getattr(call, "debug_error_string", None)
    return bool(
        call.code() == grpc.StatusCode.INTERNAL
        and call.details() == "Internal error from Core"
        and not call.trailing_metadata()
        and debug is not None
        and '"execute_batch"' in (debug() or "")
    )


def from_rpc_error(error: grpc.RpcError) -> MeterError:
    """The typed exception for a failed call of the sync or the asyncio API."""
    call: Any = error
    if _write_failed_as_the_call_ended(call):
        typed: MeterError = Unavailable(
            grpc.StatusCode.UNAVAILABLE, "the connection to Meter broke while sending"
        )
        typed.__cause__ = error
        return typed
    code: grpc.StatusCode = call.code()
    message: str = call.details() or ""
    status = status_pb2.Status(code=code.value[0], message=message)
    for key, value in call.trailing_metadata() or ():
        if key == _STATUS_DETAILS_KEY:
            status.MergeFromString(value)
            break
    if status.code != code.value[0]:
        # The details disagree with the call's code: trust the code the transport saw.
        status.code, status.message = code.value[0], message
    typed = from_status(status)
    typed.__cause__ = error
    return typed


def _int(value: str | None) -> int:
    try:
        return int(value or 0)
    except ValueError:
        return 0
