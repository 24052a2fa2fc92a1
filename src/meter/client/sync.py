"""MeterClient: the blocking client for workers, the planner and tools.

Example::

    with MeterClient() as meter:                       # METER_TARGET, METER_TOKEN
        with meter.job("ws-1", "content.generate_post", job_id=job.id,
                       usage=usage(complexity="standard")) as j:
            j.actual = run(job)                        # commit on success, release on error
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from datetime import datetime
from typing import Any, TypeVar

import grpc

from meter.client import requests as rq
from meter.client.errors import MeterError, from_rpc_error
from meter.client.job import JobState
from meter.client.options import Connection, Tls
from meter.client.retry import Attempts, RetryPolicy
from meterpb.v1 import catalog_pb2 as cpb
from meterpb.v1 import catalog_pb2_grpc, events_pb2_grpc, meter_pb2_grpc
from meterpb.v1 import events_pb2 as epb
from meterpb.v1 import meter_pb2 as pb

T = TypeVar("T")
Seconds = rq.Seconds


class Job(JobState):
    """A running job's handle (sync): set `actual` or `usage`; `extend()` heartbeats."""

    __slots__ = ("_client", "_ttl")

    def __init__(self, client: MeterClient, state: JobState, ttl: Seconds | None) -> None:
        JobState.__init__(self, state.workspace, state.request_id, state.hold, state.reserved_usage)
        self._client = client
        self._ttl = ttl

    def extend(self, ttl: Seconds | None = None) -> pb.Hold:
        """Push the hold's expiry to `ttl` (default: the job's ttl) from now."""
        self.hold = self._client.extend(self.workspace, self.request_id, ttl=ttl or self._ttl)
        return self.hold


def connection(
    target: str | None,
    token: str | None,
    tls: Tls | None,
    retry: RetryPolicy | None,
    options: Iterable[tuple[str, int | str]],
) -> Connection:
    base = Connection()
    return Connection(
        target=target or base.target,
        token=token if token is not None else base.token,
        tls=tls,
        retry=retry or base.retry,
        options=tuple(options),
    )


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
        request_id=request_id or rq.new_request_id("replay"),
    )
    if since is not None:
        request.start_time.CopyFrom(rq.timestamp(since))
    return request


class MeterClient:
    """A blocking Meter client; thread-safe; use one per process and `close()` it.

    Every call raises a `meter.client.errors.MeterError` subclass on failure. Unary calls
    are retried on UNAVAILABLE, DEADLINE_EXCEEDED, ABORTED and RESOURCE_EXHAUSTED with the
    same request (so the same request id), per `retry`.

    Args:
        target: HOST:PORT; default METER_TARGET, else 127.0.0.1:50051.
        token: bearer token; default METER_TOKEN.
        tls: TLS (and mutual TLS) settings; None for plaintext.
        retry: the retry policy (deadlines, backoff, budget).
        options: extra gRPC channel options.
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
            self._channel = grpc.secure_channel(c.target, c.tls.credentials(), c.options)
        else:
            self._channel = grpc.insecure_channel(c.target, c.options)
        self._meter = meter_pb2_grpc.MeterStub(self._channel)
        self._catalog = catalog_pb2_grpc.CatalogStub(self._channel)
        self._events = events_pb2_grpc.EventsStub(self._channel)
        self._metadata = c.metadata()

    def close(self) -> None:
        self._channel.close()

    def __enter__(self) -> MeterClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _call(
        self,
        method: Callable[..., T],
        request: Any,
        timeout: float | None = None,
        extra: float = 0.0,
    ) -> T:
        name = type(request).__name__.removesuffix("Request")
        tries = Attempts(self.connection.retry, name, timeout, extra)
        while True:
            try:
                return method(
                    request,
                    timeout=tries.next_timeout(),
                    metadata=self._metadata,
                    wait_for_ready=tries.wait_for_ready,
                )
            except grpc.RpcError as e:
                error = from_rpc_error(e)
            time.sleep(tries.backoff(error))

    # Holds and charges.

    def reserve(
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
        """Hold the maximum cost of `operation` for `usage` (or an explicit `amount`).

        Give `request_id`, or `job_id` to derive it (`request_id_for`), so that a
        re-queued job reuses its hold. With `wait_for_funds`, wait that long for a grant
        instead of failing at once.

        Raises:
            InsufficientCredits: not enough available credits (with required, available,
                shortfall, suggested_package); nothing was held.
            RequestIdReused: the request id was used with other parameters.
            OperationNotFound, InvalidArgument, Unavailable, ...
        """
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
        return self._call(self._meter.Reserve, request, timeout, extra).hold

    def commit(
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
        """Charge the actual cost (`amount`, or `usage` priced with the hold's catalog).

        Raises:
            HoldReleased: the hold was released. HoldNotFound: no such hold.
        """
        rid = rq.pick_request_id(request_id, job_id)
        request = rq.commit(workspace, rid, usage=usage, amount=amount, labels=labels)
        return self._call(self._meter.Commit, request, timeout)

    def release(
        self,
        workspace: str,
        request_id: str | None = None,
        *,
        job_id: str | None = None,
        timeout: float | None = None,
    ) -> pb.ReleaseResponse:
        """Give a held amount back in full (the job failed or was cancelled).

        Raises:
            HoldCommitted: the hold was committed. HoldNotFound: no such hold.
        """
        rid = rq.pick_request_id(request_id, job_id)
        request = pb.ReleaseRequest(workspace_id=workspace, request_id=rid)
        return self._call(self._meter.Release, request, timeout)

    def extend(
        self,
        workspace: str,
        request_id: str | None = None,
        *,
        job_id: str | None = None,
        ttl: Seconds | None = None,
        timeout: float | None = None,
    ) -> pb.Hold:
        """Make a held hold expire `ttl` from now (long jobs heartbeat with it).

        Raises:
            HoldReleased, HoldCommitted, HoldExpired, HoldNotFound.
        """
        request = rq.extend(workspace, rq.pick_request_id(request_id, job_id), ttl)
        return self._call(self._meter.Extend, request, timeout).hold

    def charge(
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
        """Reserve and commit in one call, for instant operations.

        Raises:
            InsufficientCredits, RequestIdReused, OperationNotFound, ...
        """
        rid = rq.pick_request_id(request_id, job_id)
        request = rq.charge(
            workspace, rid, operation, usage=usage, amount=amount, actor=actor, labels=labels
        )
        return self._call(self._meter.Charge, request, timeout)

    @contextmanager
    def job(
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
    ) -> Iterator[Job]:
        """Reserve, run the block, then commit its actual cost; release if it raises.

        The exception is re-raised after the release (a failed release is added to it as
        a note: the hold then expires by itself at its ttl).

        Example::

            with client.job(ws, "content.generate_post", job_id=job.id) as j:
                j.actual = generate(job)
            j.result.charged
        """
        rid = rq.pick_request_id(request_id, job_id)
        hold = self.reserve(
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
        handle = Job(self, JobState(workspace, rid, hold, usage), ttl)
        try:
            yield handle
        except BaseException as failure:
            try:
                self.release(workspace, rid)
            except MeterError as e:
                failure.add_note(f"meter: releasing {rid!r} failed: {e}")
            raise
        handle.result = self._call(self._meter.Commit, handle.commit_request())

    # Grants and corrections.

    def grant(
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
        """Add credits by `package` name or explicit `amount`; `request_id` = payment id.

        `category` (paid, promotional, manual) and `priority` (0-100, lower burns first)
        place the lot in the burn order; `pending` records it unspendable until
        `confirm_grant` (a payment still processing).

        Raises:
            PackageNotFound, RequestIdReused, InvalidArgument.
        """
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
        return self._call(self._meter.GrantCredits, request)

    def adjust(
        self, workspace: str, request_id: str, amount: int, reason: str, *, actor: str = ""
    ) -> pb.AdjustCreditsResponse:
        """An administrator's signed correction; never below zero.

        Raises:
            InsufficientCredits: a negative adjustment larger than what is available.
        """
        request = pb.AdjustCreditsRequest(
            workspace_id=workspace, request_id=request_id, amount=amount, reason=reason,
            actor_id=actor,
        )  # fmt: skip
        return self._call(self._meter.AdjustCredits, request)

    def refund(
        self,
        workspace: str,
        request_id: str,
        charge_request_id: str,
        *,
        amount: int = 0,
        reason: str = "",
        actor: str = "",
    ) -> pb.RefundResponse:
        """Give back `amount` (0: all that is left) of the charge `charge_request_id`."""
        request = pb.RefundRequest(
            workspace_id=workspace, request_id=request_id, charge_request_id=charge_request_id,
            amount=amount, reason=reason, actor_id=actor,
        )  # fmt: skip
        return self._call(self._meter.Refund, request)

    # Credit policies.

    def confirm_grant(
        self, workspace: str, request_id: str, *, actor: str = ""
    ) -> pb.GrantCreditsResponse:
        """Make the pending grant `request_id` spendable. Idempotent.

        Raises:
            GrantNotFound, FailedPrecondition (GRANT_VOIDED, GRANT_NOT_PENDING).
        """
        request = pb.ConfirmGrantRequest(
            workspace_id=workspace, request_id=request_id, actor_id=actor
        )
        return self._call(self._meter.ConfirmGrant, request)

    def void_grant(
        self, workspace: str, request_id: str, *, reason: str = "", actor: str = ""
    ) -> pb.GrantCreditsResponse:
        """Remove the pending grant `request_id`. Idempotent.

        Raises:
            GrantNotFound, FailedPrecondition (GRANT_CONFIRMED, GRANT_NOT_PENDING).
        """
        request = pb.VoidGrantRequest(
            workspace_id=workspace, request_id=request_id, reason=reason, actor_id=actor
        )
        return self._call(self._meter.VoidGrant, request)

    def set_member_limit(
        self, workspace: str, actor: str, period: str | int, limit: int | None
    ) -> pb.MemberLimit:
        """Limit what `actor` ("" = every member) may spend per day, week or month; a limit of
        None removes it. A member over its limit gets MemberLimitReached."""
        request = rq.member_limit(workspace, actor, period, limit)
        return self._call(self._meter.SetMemberLimit, request)

    def member_limits(self, workspace: str) -> list[pb.MemberLimit]:
        request = pb.ListMemberLimitsRequest(workspace_id=workspace)
        return list(self._call(self._meter.ListMemberLimits, request).limits)

    def set_auto_topup(
        self,
        workspace: str,
        *,
        enabled: bool = True,
        threshold: int = 0,
        package: str | None = None,
        amount: int | None = None,
        monthly_limit: int = 0,
    ) -> pb.AutoTopUp:
        """Below `threshold`, a topup.requested event asks the payment handler to buy
        `package` (or `amount`), at most `monthly_limit` times a month. enabled=False alone
        disables the rule and keeps it."""
        request = rq.auto_topup(
            workspace,
            enabled=enabled,
            threshold=threshold,
            package=package,
            amount=amount,
            monthly_limit=monthly_limit,
        )
        return self._call(self._meter.SetAutoTopUp, request)

    def auto_topup(self, workspace: str) -> pb.AutoTopUp:
        request = pb.GetAutoTopUpRequest(workspace_id=workspace)
        return self._call(self._meter.GetAutoTopUp, request)

    def report_topup_failed(
        self, workspace: str, request_id: str, reason: str = ""
    ) -> pb.AutoTopUp:
        """The payment for top-up request `request_id` failed; three in a row disable the rule."""
        request = pb.ReportTopUpFailedRequest(
            workspace_id=workspace, request_id=request_id, reason=reason
        )
        return self._call(self._meter.ReportTopUpFailed, request)

    # Reads.

    def balance(self, workspace: str) -> pb.Balance:
        """The workspace's balance (a new workspace reads as zero)."""
        return self._call(self._meter.GetBalance, pb.GetBalanceRequest(workspace_id=workspace))

    def list_transactions(
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
        """One page of journal entries, newest first (kinds: GRANT, CHARGE, ...)."""
        request = rq.transactions(
            workspace, kinds=kinds, operations=operations, actor=actor, since=since,
            until=until, page_size=page_size, page_token=page_token,
        )  # fmt: skip
        return self._call(self._meter.ListTransactions, request)

    def history(
        self,
        workspace: str,
        *,
        kinds: Iterable[str | int] = (),
        operations: Iterable[str] = (),
        actor: str = "",
        since: datetime | None = None,
        until: datetime | None = None,
        page_size: int = 1000,
    ) -> Iterator[pb.JournalEntry]:
        """Every matching journal entry, newest first, fetching pages as it goes."""
        kinds, operations, token = tuple(kinds), tuple(operations), ""
        while True:
            page = self.list_transactions(
                workspace, kinds=kinds, operations=operations, actor=actor, since=since,
                until=until, page_size=page_size, page_token=token,
            )  # fmt: skip
            yield from page.entries
            token = page.next_page_token
            if not token:
                return

    def list_holds(
        self,
        workspace: str,
        *,
        states: Iterable[str | int] = (),
        page_size: int = 0,
        page_token: str = "",
    ) -> pb.ListHoldsResponse:
        """One page of the workspace's holds (states: HELD, COMMITTED, ...; none: all)."""
        request = pb.ListHoldsRequest(
            workspace_id=workspace,
            states=[rq.hold_state(s) for s in states],
            page_size=page_size,
            page_token=page_token,
        )
        return self._call(self._meter.ListHolds, request)

    def holds(self, workspace: str, *, states: Iterable[str | int] = ()) -> Iterator[pb.Hold]:
        """Every hold of the workspace in `states`, fetching pages as it goes."""
        states, token = tuple(states), ""
        while True:
            page = self.list_holds(workspace, states=states, page_size=1000, page_token=token)
            yield from page.holds
            token = page.next_page_token
            if not token:
                return

    def usage(
        self,
        workspace: str,
        by: str,
        *,
        since: datetime | None = None,
        until: datetime | None = None,
    ) -> pb.GetUsageResponse:
        """Credits used and counts grouped `by` operation, actor, day or week."""
        request = pb.GetUsageRequest(workspace_id=workspace, group_by=rq.usage_grouping(by))
        if since is not None:
            request.start_time.CopyFrom(rq.timestamp(since))
        if until is not None:
            request.end_time.CopyFrom(rq.timestamp(until))
        return self._call(self._meter.GetUsage, request)

    def audit(self, workspace: str = "") -> pb.AuditResponse:
        """Recompute balances from the journal (one workspace, or all) and list discrepancies."""
        return self._call(self._meter.Audit, pb.AuditRequest(workspace_id=workspace))

    def watch_balance(self, workspace: str) -> Iterator[pb.WatchBalanceResponse]:
        """The balance now, then one message per change or alert, until closed."""
        call = self._meter.WatchBalance(
            pb.WatchBalanceRequest(workspace_id=workspace), metadata=self._metadata
        )
        try:
            yield from call
        except grpc.RpcError as e:
            raise from_rpc_error(e) from None
        finally:
            call.cancel()  # type: ignore[no-untyped-call]

    # Catalog.

    def quote(
        self,
        operation: str,
        *,
        usage: pb.Usage | None = None,
        amount: int | None = None,
        workspace: str = "",
        catalog_version: int = 0,
    ) -> cpb.QuoteResponse:
        """The min, expected and max credits of an operation for a usage."""
        request = cpb.QuoteRequest(
            operation=operation, workspace_id=workspace, catalog_version=catalog_version
        )
        if usage is not None:
            request.usage.CopyFrom(usage)
        if amount is not None:
            request.amount = amount
        return self._call(self._catalog.Quote, request)

    def estimate_campaign(
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
        """A campaign's min, expected and max credits; with a workspace, whether it fits.

        `sufficient`, `shortfall` and `available` are set only when a workspace is given:
        without one, ``HasField("sufficient")`` is false (and --json leaves them out).
        """
        request = rq.estimate(
            platforms=platforms, duration_days=days, posts_per_week=posts_per_week,
            complexity_name=complexity, strategy_analysis=strategy_analysis,
            rss_items=rss_items, regenerations=regenerations, workspace=workspace,
            catalog_version=catalog_version,
        )  # fmt: skip
        return self._call(self._catalog.EstimateCampaign, request)

    def list_packages(self) -> list[cpb.Package]:
        """The credit packages, smallest first."""
        return list(self._call(self._catalog.ListPackages, cpb.ListPackagesRequest()).packages)

    def list_operations(self, catalog_version: int = 0) -> cpb.ListOperationsResponse:
        """The cost rules of the current (or a given) catalog version."""
        request = cpb.ListOperationsRequest(catalog_version=catalog_version)
        return self._call(self._catalog.ListOperations, request)

    def publish_catalog(
        self,
        document: str,
        *,
        format: str | None = None,
        description: str = "",
        request_id: str | None = None,
    ) -> cpb.PublishCatalogResponse:
        """Publish a new catalog version from a TOML or JSON document.

        Without a request id one is made for this call, so its retries stay idempotent.

        Raises:
            InvalidArgument: the document's violations name each rule and field.
        """
        request = cpb.PublishCatalogRequest(
            request_id=request_id or rq.new_request_id("catalog"),
            document=document,
            format=rq.document_format(format),
            description=description,
        )
        return self._call(self._catalog.PublishCatalog, request)

    # Events and webhooks.

    def list_events(
        self,
        workspace: str = "",
        *,
        types: Iterable[str] = (),
        page_size: int = 0,
        page_token: str = "",
    ) -> epb.ListEventsResponse:
        """One page of events, oldest first (all workspaces' without `workspace`).

        `next_page_token` is always set: list again with it to get what came after.
        """
        request = epb.ListEventsRequest(
            workspace_id=workspace, types=list(types), page_size=page_size, page_token=page_token
        )
        return self._call(self._events.ListEvents, request)

    def events(
        self, workspace: str = "", *, types: Iterable[str] = (), after: str = ""
    ) -> Iterator[epb.Event]:
        """Every event available now after `after` (a next_page_token), oldest first."""
        types, token = tuple(types), after
        while True:
            page = self.list_events(workspace, types=types, page_size=1000, page_token=token)
            if not page.events:
                return
            yield from page.events
            token = page.next_page_token

    def create_webhook_endpoint(
        self,
        url: str,
        *,
        event_types: Iterable[str] = (),
        workspace_ids: Iterable[str] = (),
        description: str = "",
        request_id: str | None = None,
    ) -> epb.CreateWebhookEndpointResponse:
        """A new endpoint and its signing secret (the only answer that carries it).

        Empty `event_types` / `workspace_ids`: every type / workspace. Without a request id
        one is made for this call, so its retries create one endpoint.
        """
        request = epb.CreateWebhookEndpointRequest(
            url=url,
            event_types=list(event_types),
            workspace_ids=list(workspace_ids),
            description=description,
            request_id=request_id or rq.new_request_id("webhook"),
        )
        return self._call(self._events.CreateWebhookEndpoint, request)

    def list_webhook_endpoints(self) -> list[epb.WebhookEndpoint]:
        """Every webhook endpoint (without secrets)."""
        request = epb.ListWebhookEndpointsRequest()
        return list(self._call(self._events.ListWebhookEndpoints, request).endpoints)

    def get_webhook_endpoint(self, endpoint_id: str) -> epb.WebhookEndpoint:
        """One webhook endpoint (without its secret)."""
        request = epb.GetWebhookEndpointRequest(endpoint_id=endpoint_id)
        return self._call(self._events.GetWebhookEndpoint, request)

    def update_webhook_endpoint(
        self,
        endpoint_id: str,
        *,
        url: str | None = None,
        event_types: Iterable[str] | None = None,
        workspace_ids: Iterable[str] | None = None,
        description: str | None = None,
        enabled: bool | None = None,
    ) -> epb.WebhookEndpoint:
        """Change the fields given (not None); the others stay as they are.

        Raises:
            ValueError: nothing to change.
        """
        request = endpoint_update(
            endpoint_id, url=url, event_types=event_types, workspace_ids=workspace_ids,
            description=description, enabled=enabled,
        )  # fmt: skip
        return self._call(self._events.UpdateWebhookEndpoint, request)

    def delete_webhook_endpoint(self, endpoint_id: str) -> None:
        """Delete an endpoint and stop its deliveries."""
        request = epb.DeleteWebhookEndpointRequest(endpoint_id=endpoint_id)
        self._call(self._events.DeleteWebhookEndpoint, request)

    def rotate_webhook_secret(
        self, endpoint_id: str, *, request_id: str | None = None
    ) -> epb.RotateWebhookSecretResponse:
        """A new signing secret; for 24 hours deliveries are signed with both."""
        request = epb.RotateWebhookSecretRequest(
            endpoint_id=endpoint_id, request_id=request_id or rq.new_request_id("rotate")
        )
        return self._call(self._events.RotateWebhookSecret, request)

    def list_deliveries(
        self,
        endpoint_id: str = "",
        *,
        event_id: str = "",
        page_size: int = 0,
        page_token: str = "",
    ) -> epb.ListDeliveriesResponse:
        """One page of delivery attempts to an endpoint and/or of an event, newest first."""
        request = epb.ListDeliveriesRequest(
            endpoint_id=endpoint_id, event_id=event_id, page_size=page_size, page_token=page_token
        )
        return self._call(self._events.ListDeliveries, request)

    def replay_events(
        self,
        endpoint_id: str,
        *,
        since: datetime | None = None,
        event_ids: Iterable[str] = (),
        request_id: str | None = None,
    ) -> int:
        """Deliver again, with their ids, the endpoint's events `since` a time or the
        `event_ids` given (exactly one of them); returns the deliveries queued."""
        request = replay(endpoint_id, since, event_ids, request_id)
        return self._call(self._events.ReplayEvents, request).queued

    def send_test_event(self, endpoint_id: str) -> epb.DeliveryAttempt:
        """Deliver a webhook.test event to the endpoint now; returns the attempt."""
        request = epb.SendTestEventRequest(endpoint_id=endpoint_id)
        return self._call(self._events.SendTestEvent, request).attempt
