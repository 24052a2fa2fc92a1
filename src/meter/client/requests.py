"""Python values in their wire form: enum names, durations, times, and the ledger requests.

The Reserve, Commit, Extend and Charge requests are built here because the unary calls, the
stream session and a job's commit all send them; a request that one method alone sends is
built in that method.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable, Mapping
from datetime import datetime, timedelta
from typing import TypeVar

from google.protobuf import duration_pb2, timestamp_pb2

from meterpb.v1 import catalog_pb2 as cpb
from meterpb.v1 import meter_pb2 as pb

Seconds = float | timedelta
Labels = Mapping[str, str]

_COMPLEXITY = {"simple": 1, "standard": 2, "complex": 3}
_LENGTH = {"short": 1, "medium": 2, "long": 3}


def usage(
    complexity: str | int = 0, length: str | int = 0, platforms: int = 0, items: int = 0
) -> pb.Usage:
    """A Usage from names: complexity simple|standard|complex, length short|medium|long."""
    c = _COMPLEXITY[complexity.lower()] if isinstance(complexity, str) else complexity
    n = _LENGTH[length.lower()] if isinstance(length, str) else length
    return pb.Usage(complexity=c, length=n, platforms=platforms, items=items)  # type: ignore[arg-type]


def complexity(name: str) -> pb.Complexity.ValueType:
    return pb.Complexity.Value(f"COMPLEXITY_{name.upper()}") if name else pb.COMPLEXITY_UNSPECIFIED


def duration(value: Seconds) -> duration_pb2.Duration:
    d = duration_pb2.Duration()
    if isinstance(value, timedelta):
        d.FromTimedelta(value)
    else:
        d.FromNanoseconds(int(value * 1e9))
    return d


def seconds(value: Seconds) -> float:
    return value.total_seconds() if isinstance(value, timedelta) else float(value)


def timestamp(value: datetime) -> timestamp_pb2.Timestamp:
    t = timestamp_pb2.Timestamp()
    t.FromDatetime(value)
    return t


_Priced = TypeVar(
    "_Priced", pb.ReserveRequest, pb.CommitRequest, pb.ChargeRequest, cpb.QuoteRequest
)
_Operation = TypeVar("_Operation", pb.ReserveRequest, pb.ChargeRequest)
_Value = TypeVar("_Value")


def priced(r: _Priced, usage: pb.Usage | None, amount: int | None) -> _Priced:
    """The request with what prices it: a usage for the catalog, or an explicit amount."""
    if usage is not None:
        r.usage.CopyFrom(usage)
    if amount is not None:
        r.amount = amount
    return r


def _operation(
    kind: type[_Operation],
    workspace: str,
    request_id: str,
    operation: str,
    usage: pb.Usage | None,
    amount: int | None,
    actor: str,
    labels: Labels | None,
) -> _Operation:
    """A Reserve or Charge request: one operation of one actor, priced."""
    r = kind(
        workspace_id=workspace,
        request_id=request_id,
        operation=operation,
        actor_id=actor,
        labels=dict(labels or {}),
    )
    return priced(r, usage, amount)


def reserve(
    workspace: str,
    request_id: str,
    operation: str,
    *,
    usage: pb.Usage | None,
    amount: int | None,
    actor: str,
    labels: Labels | None,
    ttl: Seconds | None,
    wait_for_funds: Seconds | None,
) -> pb.ReserveRequest:
    r = _operation(
        pb.ReserveRequest, workspace, request_id, operation, usage, amount, actor, labels
    )
    if ttl is not None:
        r.ttl.CopyFrom(duration(ttl))
    if wait_for_funds is not None:
        r.wait_for_funds.CopyFrom(duration(wait_for_funds))
    return r


def funds_wait(wait_for_funds: Seconds | None) -> float:
    """How much longer than its timeout a reserve may take: its wait for funds."""
    return seconds(wait_for_funds) if wait_for_funds is not None else 0.0


def commit(
    workspace: str,
    request_id: str,
    *,
    usage: pb.Usage | None,
    amount: int | None,
    labels: Labels | None,
) -> pb.CommitRequest:
    r = pb.CommitRequest(workspace_id=workspace, request_id=request_id, labels=dict(labels or {}))
    return priced(r, usage, amount)


def extend(workspace: str, request_id: str, ttl: Seconds | None) -> pb.ExtendRequest:
    r = pb.ExtendRequest(workspace_id=workspace, request_id=request_id)
    if ttl is not None:
        r.ttl.CopyFrom(duration(ttl))
    return r


def charge(
    workspace: str,
    request_id: str,
    operation: str,
    *,
    usage: pb.Usage | None,
    amount: int | None,
    actor: str,
    labels: Labels | None,
) -> pb.ChargeRequest:
    return _operation(
        pb.ChargeRequest, workspace, request_id, operation, usage, amount, actor, labels
    )


def _enum(value: str | int, prefix: str, by_name: Callable[[str], _Value]) -> _Value:
    """An enum value given as itself, or by its name in any case, with or without `prefix`."""
    if isinstance(value, int):
        return value  # type: ignore[return-value]
    return by_name(prefix + value.upper().removeprefix(prefix))


def entry_kind(kind: str | int) -> pb.EntryKind.ValueType:
    """GRANT, CHARGE, EXPIRE, ADJUST, REFUND (any case) or the enum value."""
    return _enum(kind, "ENTRY_KIND_", pb.EntryKind.Value)


def credit_category(category: str | int) -> pb.CreditCategory.ValueType:
    """PAID, PROMOTIONAL, MANUAL (any case), the enum value, or 0/"" for the default."""
    if not category:
        return pb.CREDIT_CATEGORY_UNSPECIFIED
    return _enum(category, "CREDIT_CATEGORY_", pb.CreditCategory.Value)


def limit_period(period: str | int) -> pb.LimitPeriod.ValueType:
    """DAY, WEEK, MONTH, TOTAL (any case) or the enum value."""
    return _enum(period, "LIMIT_PERIOD_", pb.LimitPeriod.Value)


def hold_state(state: str | int) -> pb.HoldState.ValueType:
    """HELD, COMMITTED, RELEASED, EXPIRED (any case) or the enum value."""
    return _enum(state, "HOLD_STATE_", pb.HoldState.Value)


def usage_grouping(by: str) -> pb.UsageGrouping.ValueType:
    """operation, actor, day, week or label."""
    return pb.UsageGrouping.Value(f"USAGE_GROUPING_{by.upper()}")


def document_format(name: str | None) -> cpb.DocumentFormat.ValueType:
    if not name:
        return cpb.DOCUMENT_FORMAT_UNSPECIFIED
    return cpb.DocumentFormat.Value(f"DOCUMENT_FORMAT_{name.upper()}")


def new_request_id(prefix: str) -> str:
    """A fresh request id, for calls whose caller gave none."""
    return f"{prefix}:{uuid.uuid4()}"
