"""AsyncMeterClient: the asyncio client, the same shape as MeterClient.

Example::

    async with AsyncMeterClient() as meter:            # METER_TARGET, METER_TOKEN
        async with meter.job("ws-1", "content.generate_post", job_id=job.id,
                             usage=usage(complexity="standard")) as j:
            j.actual = await run(job)                  # commit on success, release on error
"""

# `timeout` is the gRPC deadline sent with each attempt, as in MeterClient, not a local
# cancel scope, so it stays an argument.
# ruff: noqa: ASYNC109

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable
from contextlib import asynccontextmanager
from datetime import datetime
from typing import Any, TypeVar

import grpc

from meter.client import requests as rq
from meter.client.errors import MeterError, from_rpc_error
from meter.client.job import JobState
from meter.client.options import Tls
from meter.client.retry import Attempts, RetryPolicy
from meter.client.stream import StreamSession
from meter.client.sync import connection, endpoint_update, replay
from meterpb.v1 import catalog_pb2 as cpb
from meterpb.v1 import catalog_pb2_grpc, events_pb2_grpc, meter_pb2_grpc
from meterpb.v1 import events_pb2 as epb
from meterpb.v1 import meter_pb2 as pb

T = TypeVar("T")
Seconds = rq.Seconds


class AsyncJob(JobState):
    """A running job's handle (asyncio): set `actual` or `usage`; `await extend()` heartbeats."""

    __slots__ = ("_client", "_ttl")

    def __init__(self, client: AsyncMeterClient, state: JobState, ttl: Seconds | None) -> None:
        JobState.__init__(self, state.workspace, state.request_id, state.hold, state.reserved_usage)
        self._client = client
        self._ttl = ttl

    async def extend(self, ttl: Seconds | None = None) -> pb.Hold:
        """Push the hold's expiry to `ttl` (default: the job's ttl) from now."""
        self.hold = await self._client.extend(self.workspace, self.request_id, ttl=ttl or self._ttl)
        return self.hold


class AsyncMeterClient:
    """An asyncio Meter client (grpc.aio); make it inside the event loop that uses it.

    The same methods, arguments, retries and exceptions as `MeterClient`, awaited. See
    `MeterClient` for each method's documentation.
    """

    def __init__(
        self,
        target: str | None = None,
        *,
        token: str | None = None,
        tls: Tls | None = None,
        retry: RetryPolicy | None = None,
        options: Iterable[tuple[str, int | str]] = (),
    ) -> None:
        self.connection = connection(target, token, tls, retry, options)
        c = self.connection
        if c.tls is not None:
            self._channel = grpc.aio.secure_channel(c.target, c.tls.credentials(), c.options)
        else:
            self._channel = grpc.aio.insecure_channel(c.target, c.options)
        self._meter = meter_pb2_grpc.MeterStub(self._channel)
        self._catalog = catalog_pb2_grpc.CatalogStub(self._channel)
        self._events = events_pb2_grpc.EventsStub(self._channel)
        self._metadata = c.metadata()

    @property
    def stub(self) -> meter_pb2_grpc.MeterStub:
        """The raw Meter stub on this client's channel (Stream sessions use it)."""
        return self._meter

    @property
    def metadata(self) -> tuple[tuple[str, str], ...]:
        return self._metadata

    async def close(self) -> None:
        await self._channel.close(None)

    async def __aenter__(self) -> AsyncMeterClient:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    async def _call(
        self,
        method: Callable[..., Awaitable[T]],
        request: Any,
        timeout: float | None = None,
        extra: float = 0.0,
    ) -> T:
        name = type(request).__name__.removesuffix("Request")
        tries = Attempts(self.connection.retry, name, timeout, extra)
        while True:
            try:
                return await method(
                    request,
                    timeout=tries.next_timeout(),
                    metadata=self._metadata,
                    wait_for_ready=tries.wait_for_ready,
                )
            except grpc.RpcError as e:
                error = from_rpc_error(e)
            await asyncio.sleep(tries.backoff(error))

    # Holds and charges.

    async def reserve(
        self,
        workspace: str,
        request_id: str | None = None,
        operation: str = "",
        *,
        job_id: str | None = None,
        usage: pb.Usage | None = None,
        amount: int | None = None,
        actor: str = "",
        labels: rq.Labels | None = None,
        ttl: Seconds | None = None,
        wait_for_funds: Seconds | None = None,
        timeout: float | None = None,
    ) -> pb.Hold:
        """As `MeterClient.reserve`."""
        rid = rq.pick_request_id(request_id, job_id)
        request = rq.reserve(
            workspace,
            rid,
            operation,
            usage=usage,
            amount=amount,
            actor=actor,
            labels=labels,
            ttl=ttl,
            wait_for_funds=wait_for_funds,
        )
        extra = rq.seconds(wait_for_funds) if wait_for_funds is not None else 0.0
        return (await self._call(self._meter.Reserve, request, timeout, extra)).hold

    async def commit(
        self,
        workspace: str,
        request_id: str | None = None,
        *,
        job_id: str | None = None,
        usage: pb.Usage | None = None,
        amount: int | None = None,
        labels: rq.Labels | None = None,
        timeout: float | None = None,
    ) -> pb.CommitResponse:
        """As `MeterClient.commit`."""
        rid = rq.pick_request_id(request_id, job_id)
        request = rq.commit(workspace, rid, usage=usage, amount=amount, labels=labels)
        return await self._call(self._meter.Commit, request, timeout)

    async def release(
        self,
        workspace: str,
        request_id: str | None = None,
        *,
        job_id: str | None = None,
        timeout: float | None = None,
    ) -> pb.ReleaseResponse:
        """As `MeterClient.release`."""
        rid = rq.pick_request_id(request_id, job_id)
        request = pb.ReleaseRequest(workspace_id=workspace, request_id=rid)
        return await self._call(self._meter.Release, request, timeout)

    async def extend(
        self,
        workspace: str,
        request_id: str | None = None,
        *,
        job_id: str | None = None,
        ttl: Seconds | None = None,
        timeout: float | None = None,
    ) -> pb.Hold:
        """As `MeterClient.extend`."""
        request = rq.extend(workspace, rq.pick_request_id(request_id, job_id), ttl)
        return (await self._call(self._meter.Extend, request, timeout)).hold

    async def charge(
        self,
        workspace: str,
        request_id: str | None = None,
        operation: str = "",
        *,
        job_id: str | None = None,
        usage: pb.Usage | None = None,
        amount: int | None = None,
        actor: str = "",
        labels: rq.Labels | None = None,
        timeout: float | None = None,
    ) -> pb.ChargeResponse:
        """As `MeterClient.charge`."""
        rid = rq.pick_request_id(request_id, job_id)
        request = rq.charge(
            workspace, rid, operation, usage=usage, amount=amount, actor=actor, labels=labels
        )
        return await self._call(self._meter.Charge, request, timeout)

    @asynccontextmanager
    async def job(
        self,
        workspace: str,
        operation: str,
        *,
        job_id: str | None = None,
        request_id: str | None = None,
        usage: pb.Usage | None = None,
        amount: int | None = None,
        actor: str = "",
        labels: rq.Labels | None = None,
        ttl: Seconds | None = None,
        wait_for_funds: Seconds | None = None,
    ) -> AsyncIterator[AsyncJob]:
        """As `MeterClient.job`: reserve; commit on success; release and re-raise on error."""
        rid = rq.pick_request_id(request_id, job_id)
        hold = await self.reserve(
            workspace,
            rid,
            operation,
            usage=usage,
            amount=amount,
            actor=actor,
            labels=labels,
            ttl=ttl,
            wait_for_funds=wait_for_funds,
        )
        handle = AsyncJob(self, JobState(workspace, rid, hold, usage), ttl)
        try:
            yield handle
        except BaseException as failure:
            try:
                # Shielded: a cancelled job must still give its credits back.
                await asyncio.shield(self.release(workspace, rid))
            except MeterError as e:
                failure.add_note(f"meter: releasing {rid!r} failed: {e}")
            raise
        handle.result = await self._call(self._meter.Commit, handle.commit_request())

    # Grants and corrections.

    async def grant(
        self,
        workspace: str,
        request_id: str,
        *,
        package: str | None = None,
        amount: int | None = None,
        expires_at: datetime | None = None,
        source: str = "",
        actor: str = "",
        labels: rq.Labels | None = None,
        category: str | int = "",
        priority: int | None = None,
        pending: bool = False,
    ) -> pb.GrantCreditsResponse:
        """As `MeterClient.grant`."""
        request = rq.grant(
            workspace,
            request_id,
            package=package,
            amount=amount,
            expires_at=expires_at,
            source=source,
            actor=actor,
            labels=labels,
            category=category,
            priority=priority,
            pending=pending,
        )
        return await self._call(self._meter.GrantCredits, request)

    async def adjust(
        self, workspace: str, request_id: str, amount: int, reason: str, *, actor: str = ""
    ) -> pb.AdjustCreditsResponse:
        """As `MeterClient.adjust`."""
        request = pb.AdjustCreditsRequest(
            workspace_id=workspace, request_id=request_id, amount=amount, reason=reason,
            actor_id=actor,
        )  # fmt: skip
        return await self._call(self._meter.AdjustCredits, request)

    async def refund(
        self,
        workspace: str,
        request_id: str,
        charge_request_id: str,
        *,
        amount: int = 0,
        reason: str = "",
        actor: str = "",
    ) -> pb.RefundResponse:
        """As `MeterClient.refund`."""
        request = pb.RefundRequest(
            workspace_id=workspace, request_id=request_id, charge_request_id=charge_request_id,
            amount=amount, reason=reason, actor_id=actor,
        )  # fmt: skip
        return await self._call(self._meter.Refund, request)

    # Credit policies.

    async def confirm_grant(
        self, workspace: str, request_id: str, *, actor: str = ""
    ) -> pb.GrantCreditsResponse:
        """As `MeterClient.confirm_grant`."""
        request = pb.ConfirmGrantRequest(
            workspace_id=workspace, request_id=request_id, actor_id=actor
        )
        return await self._call(self._meter.ConfirmGrant, request)

    async def void_grant(
        self, workspace: str, request_id: str, *, reason: str = "", actor: str = ""
    ) -> pb.GrantCreditsResponse:
        """As `MeterClient.void_grant`."""
        request = pb.VoidGrantRequest(
            workspace_id=workspace, request_id=request_id, reason=reason, actor_id=actor
        )
        return await self._call(self._meter.VoidGrant, request)

    async def set_member_limit(
        self, workspace: str, actor: str, period: str | int, limit: int | None
    ) -> pb.MemberLimit:
        """As `MeterClient.set_member_limit`."""
        request = rq.member_limit(workspace, actor, period, limit)
        return await self._call(self._meter.SetMemberLimit, request)

    async def member_limits(self, workspace: str) -> list[pb.MemberLimit]:
        """As `MeterClient.member_limits`."""
        request = pb.ListMemberLimitsRequest(workspace_id=workspace)
        return list((await self._call(self._meter.ListMemberLimits, request)).limits)

    async def set_auto_topup(
        self,
        workspace: str,
        *,
        enabled: bool = True,
        threshold: int = 0,
        package: str | None = None,
        amount: int | None = None,
        monthly_limit: int = 0,
    ) -> pb.AutoTopUp:
        """As `MeterClient.set_auto_topup`."""
        request = rq.auto_topup(
            workspace,
            enabled=enabled,
            threshold=threshold,
            package=package,
            amount=amount,
            monthly_limit=monthly_limit,
        )
        return await self._call(self._meter.SetAutoTopUp, request)

    async def auto_topup(self, workspace: str) -> pb.AutoTopUp:
        """As `MeterClient.auto_topup`."""
        request = pb.GetAutoTopUpRequest(workspace_id=workspace)
        return await self._call(self._meter.GetAutoTopUp, request)

    async def report_topup_failed(
        self, workspace: str, request_id: str, reason: str = ""
    ) -> pb.AutoTopUp:
        """As `MeterClient.report_topup_failed`."""
        request = pb.ReportTopUpFailedRequest(
            workspace_id=workspace, request_id=request_id, reason=reason
        )
        return await self._call(self._meter.ReportTopUpFailed, request)

    # Reads.

    async def balance(self, workspace: str) -> pb.Balance:
        """As `MeterClient.balance`."""
        request = pb.GetBalanceRequest(workspace_id=workspace)
        return await self._call(self._meter.GetBalance, request)

    async def list_transactions(
        self,
        workspace: str,
        *,
        kinds: Iterable[str | int] = (),
        operations: Iterable[str] = (),
        actor: str = "",
        since: datetime | None = None,
        until: datetime | None = None,
        page_size: int = 0,
        page_token: str = "",
    ) -> pb.ListTransactionsResponse:
        """As `MeterClient.list_transactions`."""
        request = rq.transactions(
            workspace, kinds=kinds, operations=operations, actor=actor, since=since,
            until=until, page_size=page_size, page_token=page_token,
        )  # fmt: skip
        return await self._call(self._meter.ListTransactions, request)

    async def history(
        self,
        workspace: str,
        *,
        kinds: Iterable[str | int] = (),
        operations: Iterable[str] = (),
        actor: str = "",
        since: datetime | None = None,
        until: datetime | None = None,
        page_size: int = 1000,
    ) -> AsyncIterator[pb.JournalEntry]:
        """As `MeterClient.history`: every matching entry, newest first, page by page."""
        kinds, operations, token = tuple(kinds), tuple(operations), ""
        while True:
            page = await self.list_transactions(
                workspace, kinds=kinds, operations=operations, actor=actor, since=since,
                until=until, page_size=page_size, page_token=token,
            )  # fmt: skip
            for entry in page.entries:
                yield entry
            token = page.next_page_token
            if not token:
                return

    async def list_holds(
        self,
        workspace: str,
        *,
        states: Iterable[str | int] = (),
        page_size: int = 0,
        page_token: str = "",
    ) -> pb.ListHoldsResponse:
        """As `MeterClient.list_holds`."""
        request = pb.ListHoldsRequest(
            workspace_id=workspace,
            states=[rq.hold_state(s) for s in states],
            page_size=page_size,
            page_token=page_token,
        )
        return await self._call(self._meter.ListHolds, request)

    async def holds(
        self, workspace: str, *, states: Iterable[str | int] = ()
    ) -> AsyncIterator[pb.Hold]:
        """As `MeterClient.holds`."""
        states, token = tuple(states), ""
        while True:
            page = await self.list_holds(workspace, states=states, page_size=1000, page_token=token)
            for hold in page.holds:
                yield hold
            token = page.next_page_token
            if not token:
                return

    async def usage(
        self,
        workspace: str,
        by: str,
        *,
        since: datetime | None = None,
        until: datetime | None = None,
    ) -> pb.GetUsageResponse:
        """As `MeterClient.usage`."""
        request = pb.GetUsageRequest(workspace_id=workspace, group_by=rq.usage_grouping(by))
        if since is not None:
            request.start_time.CopyFrom(rq.timestamp(since))
        if until is not None:
            request.end_time.CopyFrom(rq.timestamp(until))
        return await self._call(self._meter.GetUsage, request)

    async def audit(self, workspace: str = "") -> pb.AuditResponse:
        """As `MeterClient.audit`."""
        return await self._call(self._meter.Audit, pb.AuditRequest(workspace_id=workspace))

    async def watch_balance(self, workspace: str) -> AsyncIterator[pb.WatchBalanceResponse]:
        """The balance now, then one message per change or alert, until the loop stops.

        Raises:
            MeterError: the call failed (NotFound for an unknown workspace, Unavailable when
                the replica drains: watch again, and the balance comes first).
        """
        call: Any = self._meter.WatchBalance(
            pb.WatchBalanceRequest(workspace_id=workspace), metadata=self._metadata
        )
        try:
            async for message in call:
                yield message
        except grpc.RpcError as e:
            raise from_rpc_error(e) from None
        finally:
            call.cancel()

    # Catalog.

    async def quote(
        self,
        operation: str,
        *,
        usage: pb.Usage | None = None,
        amount: int | None = None,
        workspace: str = "",
        catalog_version: int = 0,
    ) -> cpb.QuoteResponse:
        """As `MeterClient.quote`."""
        request = cpb.QuoteRequest(
            operation=operation, workspace_id=workspace, catalog_version=catalog_version
        )
        if usage is not None:
            request.usage.CopyFrom(usage)
        if amount is not None:
            request.amount = amount
        return await self._call(self._catalog.Quote, request)

    async def estimate_campaign(
        self,
        *,
        platforms: int,
        days: int,
        posts_per_week: int = 0,
        complexity: str = "",
        strategy_analysis: bool = False,
        rss_items: int = 0,
        regenerations: int | None = None,
        workspace: str = "",
        catalog_version: int = 0,
    ) -> cpb.EstimateCampaignResponse:
        """As `MeterClient.estimate_campaign`."""
        request = rq.estimate(
            platforms=platforms, duration_days=days, posts_per_week=posts_per_week,
            complexity_name=complexity, strategy_analysis=strategy_analysis,
            rss_items=rss_items, regenerations=regenerations, workspace=workspace,
            catalog_version=catalog_version,
        )  # fmt: skip
        return await self._call(self._catalog.EstimateCampaign, request)

    async def list_packages(self) -> list[cpb.Package]:
        """As `MeterClient.list_packages`."""
        found = await self._call(self._catalog.ListPackages, cpb.ListPackagesRequest())
        return list(found.packages)

    async def list_operations(self, catalog_version: int = 0) -> cpb.ListOperationsResponse:
        """As `MeterClient.list_operations`."""
        request = cpb.ListOperationsRequest(catalog_version=catalog_version)
        return await self._call(self._catalog.ListOperations, request)

    async def publish_catalog(
        self,
        document: str,
        *,
        format: str | None = None,
        description: str = "",
        request_id: str | None = None,
    ) -> cpb.PublishCatalogResponse:
        """As `MeterClient.publish_catalog`."""
        request = cpb.PublishCatalogRequest(
            request_id=request_id or rq.new_request_id("catalog"),
            document=document,
            format=rq.document_format(format),
            description=description,
        )
        return await self._call(self._catalog.PublishCatalog, request)

    # Events and webhooks.

    async def list_events(
        self,
        workspace: str = "",
        *,
        types: Iterable[str] = (),
        page_size: int = 0,
        page_token: str = "",
    ) -> epb.ListEventsResponse:
        """As `MeterClient.list_events`."""
        request = epb.ListEventsRequest(
            workspace_id=workspace, types=list(types), page_size=page_size, page_token=page_token
        )
        return await self._call(self._events.ListEvents, request)

    async def events(
        self, workspace: str = "", *, types: Iterable[str] = (), after: str = ""
    ) -> AsyncIterator[epb.Event]:
        """As `MeterClient.events`: every event available now after `after`, oldest first."""
        types, token = tuple(types), after
        while True:
            page = await self.list_events(workspace, types=types, page_size=1000, page_token=token)
            if not page.events:
                return
            for event in page.events:
                yield event
            token = page.next_page_token

    async def create_webhook_endpoint(
        self,
        url: str,
        *,
        event_types: Iterable[str] = (),
        workspace_ids: Iterable[str] = (),
        description: str = "",
        request_id: str | None = None,
    ) -> epb.CreateWebhookEndpointResponse:
        """As `MeterClient.create_webhook_endpoint`."""
        request = epb.CreateWebhookEndpointRequest(
            url=url,
            event_types=list(event_types),
            workspace_ids=list(workspace_ids),
            description=description,
            request_id=request_id or rq.new_request_id("webhook"),
        )
        return await self._call(self._events.CreateWebhookEndpoint, request)

    async def list_webhook_endpoints(self) -> list[epb.WebhookEndpoint]:
        """As `MeterClient.list_webhook_endpoints`."""
        request = epb.ListWebhookEndpointsRequest()
        return list((await self._call(self._events.ListWebhookEndpoints, request)).endpoints)

    async def get_webhook_endpoint(self, endpoint_id: str) -> epb.WebhookEndpoint:
        """As `MeterClient.get_webhook_endpoint`."""
        request = epb.GetWebhookEndpointRequest(endpoint_id=endpoint_id)
        return await self._call(self._events.GetWebhookEndpoint, request)

    async def update_webhook_endpoint(
        self,
        endpoint_id: str,
        *,
        url: str | None = None,
        event_types: Iterable[str] | None = None,
        workspace_ids: Iterable[str] | None = None,
        description: str | None = None,
        enabled: bool | None = None,
    ) -> epb.WebhookEndpoint:
        """As `MeterClient.update_webhook_endpoint` (ValueError when nothing changes)."""
        request = endpoint_update(
            endpoint_id, url=url, event_types=event_types, workspace_ids=workspace_ids,
            description=description, enabled=enabled,
        )  # fmt: skip
        return await self._call(self._events.UpdateWebhookEndpoint, request)

    async def delete_webhook_endpoint(self, endpoint_id: str) -> None:
        """As `MeterClient.delete_webhook_endpoint`."""
        request = epb.DeleteWebhookEndpointRequest(endpoint_id=endpoint_id)
        await self._call(self._events.DeleteWebhookEndpoint, request)

    async def rotate_webhook_secret(
        self, endpoint_id: str, *, request_id: str | None = None
    ) -> epb.RotateWebhookSecretResponse:
        """As `MeterClient.rotate_webhook_secret`."""
        request = epb.RotateWebhookSecretRequest(
            endpoint_id=endpoint_id, request_id=request_id or rq.new_request_id("rotate")
        )
        return await self._call(self._events.RotateWebhookSecret, request)

    async def list_deliveries(
        self,
        endpoint_id: str = "",
        *,
        event_id: str = "",
        page_size: int = 0,
        page_token: str = "",
    ) -> epb.ListDeliveriesResponse:
        """As `MeterClient.list_deliveries`."""
        request = epb.ListDeliveriesRequest(
            endpoint_id=endpoint_id, event_id=event_id, page_size=page_size, page_token=page_token
        )
        return await self._call(self._events.ListDeliveries, request)

    async def replay_events(
        self,
        endpoint_id: str,
        *,
        since: datetime | None = None,
        event_ids: Iterable[str] = (),
        request_id: str | None = None,
    ) -> int:
        """As `MeterClient.replay_events`: the deliveries queued."""
        request = replay(endpoint_id, since, event_ids, request_id)
        return (await self._call(self._events.ReplayEvents, request)).queued

    async def send_test_event(self, endpoint_id: str) -> epb.DeliveryAttempt:
        """As `MeterClient.send_test_event`."""
        request = epb.SendTestEventRequest(endpoint_id=endpoint_id)
        return (await self._call(self._events.SendTestEvent, request)).attempt

    def stream_session(self, *, max_batch: int = 500) -> StreamSession:
        """A session that batches this client's ledger calls over one Meter.Stream."""
        return StreamSession(self, max_batch=max_batch)
