"""The meter.v1.Meter servicer: converts requests, calls the ledger, converts results."""

from __future__ import annotations

import asyncio
from collections import OrderedDict
from collections.abc import AsyncIterator, Callable
from datetime import datetime
from typing import Any

from meter import errors
from meter.ledger.model import AlertEvent, BalanceView, HoldState, JournalFilter
from meter.ledger.policy_service import PolicyService
from meter.ledger.service import LedgerService
from meter.ledger.usage import UsageGrouping
from meter.ledger.usage_service import UsageService
from meter.ledger.validation import LABEL_KEY_RE, Violations
from meter.ledger.watch import BalanceWatch
from meter.rpc import convert
from meter.rpc.errors import abort
from meter.rpc.export import ExportRpcs
from meter.rpc.handlers import unary
from meter.rpc.paging import Paging
from meter.rpc.policies import PolicyRpcs
from meter.rpc.policies import category as _category
from meter.rpc.stream import outcome, serve_stream
from meter.storage.audit import AuditQueries
from meter.storage.export import JournalExport
from meter.storage.queries import LedgerQueries
from meterpb.v1 import meter_pb2 as pb
from meterpb.v1 import meter_pb2_grpc

# Watch messages remembered, newest last: enough for the changes of one busy moment.
SENT_CACHE = 256


class MeterServicer(PolicyRpcs, ExportRpcs, meter_pb2_grpc.MeterServicer):
    def __init__(
        self,
        ledger: LedgerService,
        queries: LedgerQueries,
        audits: AuditQueries,
        paging: Paging,
        policies: PolicyService,
        watch: BalanceWatch | None = None,
        *,
        export: JournalExport,
        export_lag_s: float,
    ) -> None:
        self.export = export
        self.export_lag_s = export_lag_s
        self.ledger = ledger
        self.policies = policies
        self.queries = queries
        self.usage = UsageService(queries, policies)
        self.audits = audits
        self.paging = paging
        self.watch = watch
        self._sent: OrderedDict[int, tuple[object, pb.WatchBalanceResponse]] = OrderedDict()

    # Holds and charges.

    def reserve_cmd(self, r: pb.ReserveRequest) -> Any:
        return self.ledger.build_reserve(
            workspace_id=r.workspace_id,
            request_id=r.request_id,
            operation=r.operation,
            usage=convert.optional_usage(r.HasField("usage"), r.usage),
            amount=r.amount if r.HasField("amount") else None,
            actor_id=r.actor_id,
            labels=convert.labels(r.labels),
            ttl_s=convert.seconds(r.ttl) if r.HasField("ttl") else None,
            wait_s=convert.seconds(r.wait_for_funds) if r.HasField("wait_for_funds") else None,
        )

    def commit_cmd(self, r: pb.CommitRequest) -> Any:
        return self.ledger.build_commit(
            workspace_id=r.workspace_id,
            request_id=r.request_id,
            usage=convert.optional_usage(r.HasField("usage"), r.usage),
            amount=r.amount if r.HasField("amount") else None,
            labels=convert.labels(r.labels),
        )

    def release_cmd(self, r: pb.ReleaseRequest) -> Any:
        return self.ledger.build_release(workspace_id=r.workspace_id, request_id=r.request_id)

    def extend_cmd(self, r: pb.ExtendRequest) -> Any:
        return self.ledger.build_extend(
            workspace_id=r.workspace_id,
            request_id=r.request_id,
            ttl_s=convert.seconds(r.ttl) if r.HasField("ttl") else None,
        )

    def charge_cmd(self, r: pb.ChargeRequest) -> Any:
        return self.ledger.build_charge(
            workspace_id=r.workspace_id,
            request_id=r.request_id,
            operation=r.operation,
            usage=convert.optional_usage(r.HasField("usage"), r.usage),
            amount=r.amount if r.HasField("amount") else None,
            actor_id=r.actor_id,
            labels=convert.labels(r.labels),
        )

    @unary
    async def Reserve(self, request: pb.ReserveRequest, context: Any) -> pb.ReserveResponse:
        wait = None
        if request.HasField("wait_for_funds"):
            wait = convert.seconds(request.wait_for_funds)
            remaining = context.time_remaining()
            if remaining is not None:
                # Never wait past the call's deadline: leave time to answer.
                wait = min(wait, max(remaining - 0.05, 0))
        hold = await self.ledger.reserve(self.reserve_cmd(request), wait)
        return pb.ReserveResponse(hold=convert.hold(hold))

    @unary
    async def Commit(self, request: pb.CommitRequest, context: Any) -> pb.CommitResponse:
        return convert.commit(await self.ledger.commit(self.commit_cmd(request)))

    @unary
    async def Release(self, request: pb.ReleaseRequest, context: Any) -> pb.ReleaseResponse:
        out = await self.ledger.release(self.release_cmd(request))
        return pb.ReleaseResponse(hold=convert.hold(out.hold), released=out.released)

    @unary
    async def Extend(self, request: pb.ExtendRequest, context: Any) -> pb.ExtendResponse:
        return pb.ExtendResponse(
            hold=convert.hold(await self.ledger.extend(self.extend_cmd(request)))
        )

    @unary
    async def Charge(self, request: pb.ChargeRequest, context: Any) -> pb.ChargeResponse:
        return convert.charge(await self.ledger.charge(self.charge_cmd(request)))

    _builders: dict[str, Any] = {
        "reserve": reserve_cmd,
        "commit": commit_cmd,
        "release": release_cmd,
        "extend": extend_cmd,
        "charge": charge_cmd,
    }

    def _start(self, kind: str, request: Any, done: Callable[[Any], None]) -> None:
        """Validate one stream item now (raises MeterError) and start it; `done` hears how
        it ended. Plain items go straight to the batcher (no task or future per item); a
        Reserve that waits for funds gets a task."""
        cmd = self._builders[kind](self, request)
        if kind == "reserve" and request.HasField("wait_for_funds"):
            task = asyncio.ensure_future(
                self.ledger.reserve(cmd, convert.seconds(request.wait_for_funds))
            )
            task.add_done_callback(lambda t: done(outcome(t)))
            return
        self.ledger.submit(cmd, done)

    async def Stream(
        self, request_iterator: AsyncIterator[pb.StreamRequest], context: Any
    ) -> AsyncIterator[pb.StreamResponse]:
        async for response in serve_stream(request_iterator, self._start, self.ledger.explain):
            yield response

    # Live balance, usage and alerts.

    async def WatchBalance(  # type: ignore[override]
        self, request: pb.WatchBalanceRequest, context: Any
    ) -> AsyncIterator[pb.WatchBalanceResponse]:
        try:
            _workspace(request.workspace_id)
            if self.watch is None:
                raise _unimplemented("WatchBalance")
            async for event in self.watch.watch(request.workspace_id):
                yield self._watch_message(request.workspace_id, event)
        except errors.MeterError as e:
            await abort(context, e)

    @unary
    async def GetUsage(self, request: pb.GetUsageRequest, context: Any) -> pb.GetUsageResponse:
        v = Violations()
        v.id("workspace_id", request.workspace_id)
        if request.group_by not in UsageGrouping._value2member_map_:
            v.add("group_by", "required: OPERATION, ACTOR, DAY, WEEK or LABEL")
        if request.group_by == int(UsageGrouping.LABEL) and not LABEL_KEY_RE.fullmatch(
            request.label_key
        ):
            v.add(
                "label_key", "a label key: 1-63 characters of [a-z0-9_.-], starting with a letter"
            )
        start = _time(v, "start_time", request)
        end = _time(v, "end_time", request)
        if start is not None and end is not None and start >= end:
            v.add("end_time", "must be after start_time")
        if v:
            raise errors.invalid(v)
        found = await self.usage.usage(
            request.workspace_id,
            UsageGrouping(request.group_by),
            start,
            end,
            request.label_key,
        )
        return convert.usage_report(*found)

    @unary
    async def SetAlertThresholds(
        self, request: pb.SetAlertThresholdsRequest, context: Any
    ) -> pb.AlertThresholds:
        cmd = self.ledger.build_set_thresholds(
            workspace_id=request.workspace_id,
            low=request.low,
            critical=request.critical,
            runway_days=request.runway_days if request.HasField("runway_days") else None,
        )
        return convert.thresholds(await self.ledger.set_thresholds(cmd))

    # Grants and corrections.

    @unary
    async def GrantCredits(
        self, request: pb.GrantCreditsRequest, context: Any
    ) -> pb.GrantCreditsResponse:
        cmd = self.ledger.build_grant(
            workspace_id=request.workspace_id,
            request_id=request.request_id,
            amount=request.amount,
            package=request.package,
            expires_at=convert.from_ts(request.expires_at)
            if request.HasField("expires_at")
            else None,
            source=request.source,
            actor_id=request.actor_id,
            labels=convert.labels(request.labels),
            category=_category(request.category),
            priority=request.priority if request.HasField("priority") else None,
            pending=request.pending,
        )
        return convert.grant(cmd.workspace_id, await self.ledger.grant(cmd))

    @unary
    async def AdjustCredits(
        self, request: pb.AdjustCreditsRequest, context: Any
    ) -> pb.AdjustCreditsResponse:
        cmd = self.ledger.build_adjust(
            workspace_id=request.workspace_id,
            request_id=request.request_id,
            amount=request.amount,
            reason=request.reason,
            actor_id=request.actor_id,
        )
        out = await self.ledger.adjust(cmd)
        assert out.entry is not None
        return pb.AdjustCreditsResponse(
            entry=convert.entry(cmd.workspace_id, out.entry), balance=convert.balance(out.balance)
        )

    @unary
    async def Refund(self, request: pb.RefundRequest, context: Any) -> pb.RefundResponse:
        cmd = self.ledger.build_refund(
            workspace_id=request.workspace_id,
            request_id=request.request_id,
            charge_request_id=request.charge_request_id,
            amount=request.amount,
            reason=request.reason,
            actor_id=request.actor_id,
        )
        out = await self.ledger.refund(cmd)
        assert out.entry is not None
        return pb.RefundResponse(
            entry=convert.entry(cmd.workspace_id, out.entry),
            refunded=out.entry.amount,
            balance=convert.balance(out.balance),
        )

    def _watch_message(
        self, workspace_id: str, event: BalanceView | AlertEvent
    ) -> pb.WatchBalanceResponse:
        """The message for a watch event, built once for every watcher it reaches: the
        watchers woken by one change all send the same shared read (meter.ledger.watch)."""
        key = id(event)
        hit = self._sent.get(key)
        if hit is not None and hit[0] is event:
            return hit[1]
        msg = convert.watch_event(workspace_id, event)
        self._sent[key] = (event, msg)  # the event is kept, so its id is not reused meanwhile
        if len(self._sent) > SENT_CACHE:
            self._sent.popitem(last=False)
        return msg

    # Reads.

    @unary
    async def GetBalance(self, request: pb.GetBalanceRequest, context: Any) -> pb.Balance:
        _workspace(request.workspace_id)
        return convert.balance(await self.queries.balance(request.workspace_id))

    @unary
    async def ListHolds(self, request: pb.ListHoldsRequest, context: Any) -> pb.ListHoldsResponse:
        _workspace(request.workspace_id)
        states = []
        for s in request.states:
            if s not in HoldState._value2member_map_:
                raise errors.invalid_field("states", f"unknown hold state {s}")
            states.append(HoldState(s))
        size = self.paging.size(request.page_size)
        key = ("holds", request.workspace_id, tuple(sorted(states)))
        before = self.paging.cursor(request.page_token, key)
        found = await self.queries.holds(request.workspace_id, states, size + 1, before)
        shown, token = self.paging.page(found, size, key, lambda h: h.hold_id)
        return pb.ListHoldsResponse(holds=[convert.hold(h) for h in shown], next_page_token=token)

    @unary
    async def ListTransactions(
        self, request: pb.ListTransactionsRequest, context: Any
    ) -> pb.ListTransactionsResponse:
        _workspace(request.workspace_id)
        v: list[errors.FieldViolation] = []
        for k in request.kinds:
            if not 1 <= k <= 5:
                v.append(errors.FieldViolation("kinds", f"unknown entry kind {k}"))
        if len(request.operations) > 50:
            v.append(errors.FieldViolation("operations", "at most 50 operations"))
        for op in request.operations:
            if not 0 < len(op) <= 64:
                v.append(errors.FieldViolation("operations", "operation keys are 1-64 characters"))
        if len(request.actor_id) > 128:
            v.append(errors.FieldViolation("actor_id", "at most 128 characters"))
        if v:
            raise errors.invalid(v)
        flt = JournalFilter(
            kinds=tuple(sorted(set(request.kinds))),
            operations=tuple(sorted(set(request.operations))),
            actor_id=request.actor_id,
            start_time=convert.from_ts(request.start_time)
            if request.HasField("start_time")
            else None,
            end_time=convert.from_ts(request.end_time) if request.HasField("end_time") else None,
        )
        size = self.paging.size(request.page_size)
        key = ("journal", request.workspace_id, flt)
        before = self.paging.cursor(request.page_token, key)
        found = await self.queries.entries(request.workspace_id, flt, size + 1, before)
        shown, token = self.paging.page(found, size, key, lambda e: e.entry_id)
        return pb.ListTransactionsResponse(
            entries=[convert.entry(request.workspace_id, e) for e in shown], next_page_token=token
        )

    @unary
    async def ListAlerts(
        self, request: pb.ListAlertsRequest, context: Any
    ) -> pb.ListAlertsResponse:
        _workspace(request.workspace_id)
        size = self.paging.size(request.page_size)
        key = ("alerts", request.workspace_id)
        before = self.paging.cursor(request.page_token, key)
        found = await self.queries.alerts(request.workspace_id, size + 1, before)
        shown, token = self.paging.page(found, size, key, lambda a: a.event_id)
        return pb.ListAlertsResponse(
            alerts=[convert.alert(request.workspace_id, a) for a in shown], next_page_token=token
        )

    @unary
    async def Audit(self, request: pb.AuditRequest, context: Any) -> pb.AuditResponse:
        if request.workspace_id:
            _workspace(request.workspace_id)
            checked, found = await self.audits.audit([request.workspace_id])
            if not checked:
                raise errors.workspace_not_found(request.workspace_id)
        else:
            checked, found, after = 0, [], ""
            while ids := await self.audits.workspace_ids(after, 500):
                n, more = await self.audits.audit(ids)
                checked, found, after = checked + n, found + more, ids[-1]
        return pb.AuditResponse(
            workspaces_checked=checked, discrepancies=[convert.discrepancy(d) for d in found]
        )


def _unimplemented(method: str) -> errors.MeterError:
    return errors.MeterError(
        errors.Kind.UNIMPLEMENTED, "UNIMPLEMENTED", f"{method} is not served by this version"
    )


def _time(v: Violations, name: str, request: Any) -> datetime | None:
    if not request.HasField(name):
        return None
    try:
        return convert.from_ts(getattr(request, name))
    except (ValueError, OverflowError):
        v.add(name, "not a valid timestamp")
        return None


def _workspace(workspace_id: str) -> None:
    v = Violations()
    v.id("workspace_id", workspace_id)
    if v:
        raise errors.invalid(v)
