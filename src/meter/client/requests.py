"""Builds the wire requests from Python arguments; shared by the sync and asyncio clients."""

from __future__ import annotations

import uuid
from collections.abc import Callable, Iterable, Mapping
from datetime import datetime, timedelta
from typing import TypeVar

from google.protobuf import duration_pb2, timestamp_pb2

from meterpb.v1 import catalog_pb2 as cpb
from meterpb.v1 import events_pb2 as epb
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


def _priced(r: _Priced, usage: pb.Usage | None, amount: int | None) -> _Priced:
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
    return _priced(r, usage, amount)


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
    return _priced(r, usage, amount)


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


def quote(
    operation: str, usage: pb.Usage | None, amount: int | None, workspace: str, catalog_version: int
) -> cpb.QuoteRequest:
    r = cpb.QuoteRequest(
        operation=operation, workspace_id=workspace, catalog_version=catalog_version
    )
    return _priced(r, usage, amount)


def grant(
    workspace: str,
    request_id: str,
    *,
    package: str | None,
    amount: int | None,
    expires_at: datetime | None,
    source: str,
    actor: str,
    labels: Labels | None,
    category: str | int = 0,
    priority: int | None = None,
    pending: bool = False,
) -> pb.GrantCreditsRequest:
    if (package is None) == (amount is None):
        raise ValueError("grant takes a package or an amount, exactly one")
    r = pb.GrantCreditsRequest(
        workspace_id=workspace,
        request_id=request_id,
        package=package or "",
        amount=amount or 0,
        source=source,
        actor_id=actor,
        labels=dict(labels or {}),
        category=credit_category(category),
        priority=priority,
        pending=pending,
    )
    if expires_at is not None:
        r.expires_at.CopyFrom(timestamp(expires_at))
    return r


def member_limit(
    workspace: str, actor: str, period: str | int, limit: int | None
) -> pb.SetMemberLimitRequest:
    return pb.SetMemberLimitRequest(
        workspace_id=workspace, actor_id=actor, period=limit_period(period), limit=limit
    )


def auto_topup(
    workspace: str,
    *,
    enabled: bool,
    threshold: int,
    package: str | None,
    amount: int | None,
    monthly_limit: int,
) -> pb.SetAutoTopUpRequest:
    if enabled and (package is None) == (amount is None):
        raise ValueError("an auto top-up buys a package or an amount, exactly one")
    return pb.SetAutoTopUpRequest(
        workspace_id=workspace,
        enabled=enabled,
        threshold=threshold,
        package=package or "",
        amount=amount or 0,
        monthly_limit=monthly_limit,
    )


def transactions(
    workspace: str,
    *,
    kinds: Iterable[str | int],
    operations: Iterable[str],
    actor: str,
    since: datetime | None,
    until: datetime | None,
    page_size: int,
    page_token: str,
) -> pb.ListTransactionsRequest:
    r = pb.ListTransactionsRequest(
        workspace_id=workspace,
        kinds=[entry_kind(k) for k in kinds],
        operations=list(operations),
        actor_id=actor,
        page_size=page_size,
        page_token=page_token,
    )
    if since is not None:
        r.start_time.CopyFrom(timestamp(since))
    if until is not None:
        r.end_time.CopyFrom(timestamp(until))
    return r


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
    """DAY, WEEK, MONTH (any case) or the enum value."""
    return _enum(period, "LIMIT_PERIOD_", pb.LimitPeriod.Value)


def hold_state(state: str | int) -> pb.HoldState.ValueType:
    """HELD, COMMITTED, RELEASED, EXPIRED (any case) or the enum value."""
    return _enum(state, "HOLD_STATE_", pb.HoldState.Value)


def usage_grouping(by: str) -> pb.UsageGrouping.ValueType:
    """operation, actor, day or week."""
    return pb.UsageGrouping.Value(f"USAGE_GROUPING_{by.upper()}")


def estimate(
    *,
    platforms: int,
    duration_days: int,
    posts_per_week: int,
    complexity_name: str,
    strategy_analysis: bool,
    rss_items: int,
    regenerations: int | None,
    workspace: str,
    catalog_version: int,
) -> cpb.EstimateCampaignRequest:
    r = cpb.EstimateCampaignRequest(
        platforms=platforms,
        duration_days=duration_days,
        posts_per_week=posts_per_week,
        complexity=complexity(complexity_name),
        strategy_analysis=strategy_analysis,
        rss_items=rss_items,
        workspace_id=workspace,
        catalog_version=catalog_version,
    )
    if regenerations is not None:
        r.regenerations = regenerations
    return r


def document_format(name: str | None) -> cpb.DocumentFormat.ValueType:
    if not name:
        return cpb.DOCUMENT_FORMAT_UNSPECIFIED
    return cpb.DocumentFormat.Value(f"DOCUMENT_FORMAT_{name.upper()}")


def new_request_id(prefix: str) -> str:
    """A fresh request id, for calls whose caller gave none."""
    return f"{prefix}:{uuid.uuid4()}"


def endpoint_update(
    endpoint_id: str,
    *,
    url: str | None,
    event_types: Iterable[str] | None,
    workspace_ids: Iterable[str] | None,
    description: str | None,
    enabled: bool | None,
) -> epb.UpdateWebhookEndpointRequest:
    """An UpdateWebhookEndpoint request whose update_mask names the arguments given."""
    e = epb.WebhookEndpoint(endpoint_id=endpoint_id)
    paths = []
    if url is not None:
        e.url = url
        paths.append("url")
    if description is not None:
        e.description = description
        paths.append("description")
    if event_types is not None:
        e.event_types.extend(event_types)
        paths.append("event_types")
    if workspace_ids is not None:
        e.workspace_ids.extend(workspace_ids)
        paths.append("workspace_ids")
    if enabled is not None:
        e.enabled = enabled
        paths.append("enabled")
    if not paths:
        raise ValueError(
            "nothing to change: give url, event_types, workspace_ids, description or enabled"
        )
    request = epb.UpdateWebhookEndpointRequest(endpoint=e)
    request.update_mask.paths.extend(paths)
    return request


def replay(
    endpoint_id: str, since: datetime | None, event_ids: Iterable[str], request_id: str | None
) -> epb.ReplayEventsRequest:
    """A ReplayEvents request: the events since a time, or the listed ones (exactly one)."""
    ids = list(event_ids)
    if (since is None) == (not ids):
        raise ValueError("replay takes since or event_ids, exactly one")
    request = epb.ReplayEventsRequest(
        endpoint_id=endpoint_id,
        event_ids=ids,
        request_id=request_id or new_request_id("replay"),
    )
    if since is not None:
        request.start_time.CopyFrom(timestamp(since))
    return request
