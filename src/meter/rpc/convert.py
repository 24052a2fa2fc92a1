"""Proto <-> domain converters: the one module that knows both kinds of types."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import UTC, datetime
from typing import Any

from google.protobuf import duration_pb2, timestamp_pb2

from meter.catalog.estimate import CampaignPlan, Estimate
from meter.catalog.model import Package, Quote, Rule, Usage
from meter.events.model import Attempt, Endpoint, StoredEvent
from meter.ledger.budgets import BudgetStanding, BudgetView
from meter.ledger.model import (
    AlertEvent,
    BalanceView,
    CommitOutcome,
    Discrepancy,
    Entry,
    EntryOutcome,
    HoldView,
    Lot,
    TopUpView,
)
from meter.ledger.policies import MemberLimitView
from meter.ledger.runway import RunwayView
from meter.ledger.usage import UsageReport
from meterpb.v1 import catalog_pb2 as cpb
from meterpb.v1 import events_pb2 as epb
from meterpb.v1 import meter_pb2 as pb

_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


def _enum(value: int) -> Any:
    """A domain IntEnum as the generated enum's value (the numbers are equal by design)."""
    return int(value)


def ts(dt: datetime | None) -> timestamp_pb2.Timestamp | None:
    """A Timestamp, computed in integers (protobuf's FromDatetime is slow on the hot path).

    The holds of one batch share their times (the transaction's, and the expiry it implies),
    so recent conversions are kept: a message field copies what it is given."""
    if dt is None:
        return None
    t = _recent.get(dt)
    if t is None:
        if len(_recent) > 256:
            _recent.clear()
        delta = dt - _EPOCH
        t = _recent[dt] = timestamp_pb2.Timestamp(
            seconds=delta.days * 86400 + delta.seconds, nanos=delta.microseconds * 1000
        )
    return t


_recent: dict[datetime, timestamp_pb2.Timestamp] = {}


def from_ts(t: timestamp_pb2.Timestamp) -> datetime:
    return t.ToDatetime(tzinfo=datetime.now().astimezone().tzinfo).astimezone()


def seconds(d: duration_pb2.Duration) -> float:
    return d.seconds + d.nanos / 1e9


def usage(msg: pb.Usage) -> Usage:
    return Usage(
        complexity=msg.complexity,  # type: ignore[arg-type]  # validated by pricing
        length=msg.length,  # type: ignore[arg-type]
        platforms=msg.platforms,
        items=msg.items,
    )


def optional_usage(has: bool, msg: pb.Usage) -> Usage | None:
    return usage(msg) if has else None


def hold(h: HoldView) -> pb.Hold:
    msg = pb.Hold(
        hold_id=str(h.hold_id),
        workspace_id=h.workspace_id,
        request_id=h.request_id,
        amount=h.amount,
        state=_enum(h.state),
        expires_at=ts(h.expires_at),
        operation=h.operation,
        catalog_version=h.catalog_version,
        actor_id=h.actor_id,
        create_time=ts(h.created_at),
        charged=h.charged,
        finish_time=ts(h.finished_at),
    )
    if h.labels:  # filling a map field costs even when there is nothing to fill
        msg.labels.update(h.labels)
    return msg


def balance(b: BalanceView) -> pb.Balance:
    msg = pb.Balance(
        workspace_id=b.workspace_id,
        available=b.available,
        held=b.held,
        lifetime_used=b.lifetime_used,
        lifetime_granted=b.lifetime_granted,
        level=_enum(b.level),
        thresholds=thresholds(b),
        total=b.total,
        expiring_soon=pb.ExpiringSoon(
            credits=b.expiring_soon_credits, earliest=ts(b.expiring_soon_earliest)
        ),
        pending=b.pending,
        by_category=[pb.CategoryBalance(category=_enum(c), available=n) for c, n in b.by_category],
    )
    if b.runway is not None:
        msg.runway.CopyFrom(runway(b.runway))
    if b.last_transaction is not None:
        t = b.last_transaction
        msg.last_transaction.CopyFrom(
            pb.LastTransaction(
                time=ts(t.time),
                kind=_enum(t.kind),
                amount=t.amount,
                operation=t.operation,
            )
        )
    return msg


def thresholds(b: BalanceView) -> pb.AlertThresholds:
    return pb.AlertThresholds(
        workspace_id=b.workspace_id,
        low=b.low_threshold,
        critical=b.critical_threshold,
        runway_days=b.runway_days,
    )


def runway(r: RunwayView) -> pb.Runway:
    return pb.Runway(
        burn_per_day=r.burn_per_day,
        burn_per_day_30d=r.burn_per_day_30d,
        days_left=r.days_left,
        zero_at=ts(r.zero_at),
        topup_at=ts(r.topup_at),
        runway_days=r.runway_days,
    )


def budget(v: BudgetView) -> pb.Budget:
    b = v.budget
    return pb.Budget(
        budget_id=b.budget_id,
        scope_key=b.scope_key,
        scope_value=b.scope_value,
        period=_enum(b.period),
        limit=b.limit,
        warn_at=list(b.warn_at),
        enabled=b.enabled,
        used=v.used,
        remaining=v.remaining,
        resets_at=ts(v.resets_at),
        values=[
            pb.BudgetValue(value=u.value, used=u.used, remaining=u.remaining) for u in v.values
        ],
    )


def standing(s: BudgetStanding) -> pb.BudgetStanding:
    return pb.BudgetStanding(
        budget_id=s.budget_id,
        period=_enum(s.period),
        limit=s.limit,
        used=s.used,
        remaining=s.remaining,
        resets_at=ts(s.resets_at),
    )


def commit(o: CommitOutcome) -> pb.CommitResponse:
    return pb.CommitResponse(
        hold=hold(o.hold),
        charged=o.charged,
        released=o.released,
        shortfall=o.shortfall,
        late=o.late,
        balance=balance(o.balance),
    )


def charge(o: CommitOutcome) -> pb.ChargeResponse:
    return pb.ChargeResponse(
        hold=hold(o.hold),
        charged=o.charged,
        released=o.released,
        shortfall=o.shortfall,
        balance=balance(o.balance),
    )


def entry(workspace_id: str, e: Entry) -> pb.JournalEntry:
    return pb.JournalEntry(
        entry_id=str(e.entry_id),
        workspace_id=workspace_id,
        kind=_enum(e.kind),
        amount=e.amount,
        balance_after=e.balance_after,
        operation=e.operation,
        actor_id=e.actor_id,
        request_id=e.request_id,
        labels=dict(e.labels),
        create_time=ts(e.created_at),
        shortfall=e.shortfall,
        late=e.late,
        reason=e.reason,
        package=e.package,
        category=_enum(e.category or 0),
    )


def lot(lt: Lot) -> pb.Lot:
    return pb.Lot(
        lot_id=str(lt.lot_id),
        amount=lt.amount,
        remaining=lt.remaining,
        expires_at=ts(lt.expires_at),
        source=lt.source,
        package=lt.package,
        create_time=ts(lt.created_at),
        category=_enum(lt.category),
        priority=lt.priority,
        state=_enum(lt.state + 1),  # LotState.ACTIVE is 0, LOT_STATE_ACTIVE 1
        request_id=lt.request_id,
    )


def member_limit(v: MemberLimitView) -> pb.MemberLimit:
    return pb.MemberLimit(
        workspace_id=v.workspace_id,
        actor_id=v.actor_id,
        period=_enum(v.period),
        limit=v.limit,
        used=v.used,
        remaining=v.remaining,
        resets_at=ts(v.resets_at),
    )


def auto_topup(v: TopUpView) -> pb.AutoTopUp:
    return pb.AutoTopUp(
        workspace_id=v.workspace_id,
        enabled=v.enabled,
        threshold=v.threshold,
        package=v.package,
        amount=v.amount,
        monthly_limit=v.monthly_limit,
        failures=v.failures,
        outstanding_request_id=v.outstanding,
        requested_at=ts(v.requested_at),
        requested_this_month=v.requested_this_month,
    )


def grant(workspace_id: str, o: EntryOutcome) -> pb.GrantCreditsResponse:
    return pb.GrantCreditsResponse(
        entry=entry(workspace_id, o.entry) if o.entry is not None else None,
        lot=lot(o.lot) if o.lot else None,
        balance=balance(o.balance),
    )


def alert(workspace_id: str, a: AlertEvent) -> pb.AlertEvent:
    return pb.AlertEvent(
        event_id=str(a.event_id),
        workspace_id=workspace_id,
        kind=_enum(a.kind),
        available=a.available,
        threshold=a.threshold,
        required=a.required,
        operation=a.operation,
        request_id=a.request_id,
        create_time=ts(a.created_at),
    )


def usage_report(
    r: UsageReport,
    limits: Mapping[str, Sequence[MemberLimitView]] | None = None,
    budgets: Mapping[str, Sequence[BudgetStanding]] | None = None,
) -> pb.GetUsageResponse:
    """`limits`: by actor, the member limits that apply to each row's actor; `budgets`, by
    row key, the budgets that apply to its value."""
    return pb.GetUsageResponse(
        rows=[
            pb.UsageRow(
                key=row.key,
                period_start=ts(row.period_start),
                credits=row.credits,
                count=row.count,
                held=row.held,
                limits=[member_limit(v) for v in (limits or {}).get(row.key, ())],
                budgets=[standing(s) for s in (budgets or {}).get(row.key, ())],
            )
            for row in r.rows
        ],
        total_credits=r.total_credits,
        total_count=r.total_count,
    )


def watch_event(workspace_id: str, event: BalanceView | AlertEvent) -> pb.WatchBalanceResponse:
    if isinstance(event, BalanceView):
        return pb.WatchBalanceResponse(balance=balance(event))
    return pb.WatchBalanceResponse(alert=alert(workspace_id, event))


def discrepancy(d: Discrepancy) -> pb.Discrepancy:
    return pb.Discrepancy(
        workspace_id=d.workspace_id,
        check=d.check,
        subject=d.subject,
        expected=d.expected,
        actual=d.actual,
        detail=d.detail,
    )


def labels(m: Mapping[str, str]) -> dict[str, str]:
    """Labels as a dict (a protobuf map is slow to iterate, and usually empty)."""
    return dict(m) if len(m) else {}


# Catalog.

_UNITS = {"call": 1, "platform": 2, "item": 3}


def operation(r: Rule, version: int) -> cpb.Operation:
    return cpb.Operation(
        operation=r.operation,
        display_name=r.display_name,
        description=r.description,
        min=r.min,
        max=r.max,
        unit=_enum(_UNITS[r.unit.value]),
        free=r.free,
        catalog_version=version,
    )


def quote(operation_key: str, q: Quote, version: int) -> cpb.QuoteResponse:
    return cpb.QuoteResponse(
        operation=operation_key,
        min=q.min,
        expected=q.expected,
        max=q.max,
        catalog_version=version,
    )


def package(p: Package) -> cpb.Package:
    return cpb.Package(
        name=p.name, credits=p.credits, price_cents=p.price_cents, currency=p.currency
    )


def plan(req: cpb.EstimateCampaignRequest) -> CampaignPlan:
    return CampaignPlan(
        platforms=req.platforms,
        duration_days=req.duration_days,
        posts_per_week=req.posts_per_week,
        complexity=req.complexity,  # type: ignore[arg-type]  # validated by validate_plan
        strategy_analysis=req.strategy_analysis,
        rss_items=req.rss_items,
        regenerations=req.regenerations if req.HasField("regenerations") else -1,
    )


def estimate(e: Estimate, version: int) -> cpb.EstimateCampaignResponse:
    return cpb.EstimateCampaignResponse(
        min=e.min,
        expected=e.expected,
        max=e.max,
        catalog_version=version,
        breakdown=[
            cpb.EstimateLine(
                operation=line.operation,
                count=line.count,
                min=line.min,
                expected=line.expected,
                max=line.max,
            )
            for line in e.lines
        ],
    )


# Events and webhooks.


def event(e: StoredEvent) -> epb.Event:
    return epb.Event(
        event_id=e.event_id,
        type=e.type,
        workspace_id=e.workspace_id,
        time=ts(e.created_at),
        sequence=e.sequence,
        data=e.data,
    )


def endpoint(e: Endpoint) -> epb.WebhookEndpoint:
    """An endpoint as callers see it: never its secrets."""
    return epb.WebhookEndpoint(
        endpoint_id=e.endpoint_id,
        url=e.url,
        description=e.description,
        event_types=list(e.event_types),
        workspace_ids=list(e.workspace_ids),
        enabled=e.enabled,
        disabled_reason=e.disabled_reason,
        failing_since=ts(e.failing_since),
        previous_secret_expire_time=ts(e.previous_until),
        create_time=ts(e.created_at),
        update_time=ts(e.updated_at),
    )


def attempt(a: Attempt) -> epb.DeliveryAttempt:
    return epb.DeliveryAttempt(
        endpoint_id=a.endpoint_id,
        event_id=a.event_id,
        event_type=a.event_type,
        attempt=a.attempt,
        attempt_time=ts(a.attempted_at),
        http_status=a.status,
        error=a.error,
        latency=duration_pb2.Duration(
            seconds=a.latency_ms // 1000, nanos=(a.latency_ms % 1000) * 1_000_000
        ),
        next_attempt_time=ts(a.next_attempt_at),
        state=_enum(a.state + 1),
        replay=a.replay,
    )
