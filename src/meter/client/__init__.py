"""The Python client of Meter, for workers, the planner and tools (sync and asyncio).

Example (a worker's job)::

    from meter.client import MeterClient, usage

    with MeterClient() as meter, meter.job(
        "ws-1", "content.generate_post", job_id=job.id, usage=usage(complexity="complex")
    ) as j:
        j.actual = generate(job)        # committed on success; released if this raises
"""

from meter.client.aio import AsyncJob, AsyncMeterClient
from meter.client.errors import (
    Aborted,
    BudgetExceeded,
    ConcurrentUpdate,
    DeadlineExceeded,
    FailedPrecondition,
    FieldViolation,
    GrantNotFound,
    HoldCommitted,
    HoldExpired,
    HoldNotFound,
    HoldReleased,
    InsufficientCredits,
    Internal,
    InvalidArgument,
    MemberLimitReached,
    MeterError,
    NotFound,
    OperationNotFound,
    Overloaded,
    PackageNotFound,
    PermissionDenied,
    RequestIdReused,
    RequestInProgress,
    ResourceExhausted,
    Unauthenticated,
    Unavailable,
    Unimplemented,
    WorkspaceNotFound,
)
from meter.client.ids import request_id_for
from meter.client.options import Connection, Tls
from meter.client.requests import usage
from meter.client.retry import NO_RETRY, RetryEvent, RetryPolicy
from meter.client.stream import StreamSession
from meter.client.sync import Job, MeterClient

__all__ = [
    "NO_RETRY",
    "Aborted",
    "AsyncJob",
    "AsyncMeterClient",
    "BudgetExceeded",
    "ConcurrentUpdate",
    "Connection",
    "DeadlineExceeded",
    "FailedPrecondition",
    "FieldViolation",
    "GrantNotFound",
    "HoldCommitted",
    "HoldExpired",
    "HoldNotFound",
    "HoldReleased",
    "InsufficientCredits",
    "Internal",
    "InvalidArgument",
    "Job",
    "MemberLimitReached",
    "MeterClient",
    "MeterError",
    "NotFound",
    "OperationNotFound",
    "Overloaded",
    "PackageNotFound",
    "PermissionDenied",
    "RequestIdReused",
    "RequestInProgress",
    "ResourceExhausted",
    "RetryEvent",
    "RetryPolicy",
    "StreamSession",
    "Tls",
    "Unauthenticated",
    "Unavailable",
    "Unimplemented",
    "WorkspaceNotFound",
    "request_id_for",
    "usage",
]
