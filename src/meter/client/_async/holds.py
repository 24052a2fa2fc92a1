"""Holds and charges: reserve, commit, release, extend, charge, and `job()` around them."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from meter.client import _flavours
from meter.client import requests as rq
from meter.client._async.transport import AsyncTransport
from meter.client.errors import MeterError
from meter.client.ids import pick_request_id
from meter.client.job import JobState
from meterpb.v1 import meter_pb2 as pb

Seconds = rq.Seconds


class AsyncJob(JobState):
    """A running job's handle: set `actual` or `usage`; `extend()` heartbeats."""

    __slots__ = ("_client", "_ttl")

    def __init__(self, client: AsyncHoldCalls, state: JobState, ttl: Seconds | None) -> None:
        JobState.__init__(self, state.workspace, state.request_id, state.hold, state.reserved_usage)
        self._client = client
        self._ttl = ttl

    async def extend(self, ttl: Seconds | None = None) -> pb.Hold:
        """Push the hold's expiry to `ttl` (default: the job's ttl) from now."""
        self.hold = await self._client.extend(self.workspace, self.request_id, ttl=ttl or self._ttl)
        return self.hold


class AsyncHoldCalls(AsyncTransport):
    """Holds and charges: what a worker calls around each job."""

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
        """Hold the maximum cost of `operation` for `usage` (or an explicit `amount`).

        Give `request_id`, or `job_id` to derive it (`request_id_for`), so that a
        re-queued job reuses its hold. With `wait_for_funds`, wait that long for a grant
        instead of failing at once.

        Raises:
            InsufficientCredits: not enough available credits (with required, available,
                shortfall, suggested_package); nothing was held.
            BudgetExceeded: a budget the actor or labels fall under would go past its limit
                (with budget_id, scope_key, scope_value, limit, used, remaining, resets_at;
                MemberLimitReached for a member limit); nothing was held.
            RequestIdReused: the request id was used with other parameters.
            OperationNotFound, InvalidArgument, Unavailable, ...
        """
        rid = pick_request_id(request_id, job_id)
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
        extra = rq.funds_wait(wait_for_funds)
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
        """Charge the actual cost (`amount`, or `usage` priced with the hold's catalog).

        Raises:
            HoldReleased: the hold was released. HoldNotFound: no such hold.
        """
        rid = pick_request_id(request_id, job_id)
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
        """Give a held amount back in full (the job failed or was cancelled).

        Raises:
            HoldCommitted: the hold was committed. HoldNotFound: no such hold.
        """
        rid = pick_request_id(request_id, job_id)
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
        """Make a held hold expire `ttl` from now (long jobs heartbeat with it).

        Raises:
            HoldReleased, HoldCommitted, HoldExpired, HoldNotFound.
        """
        request = rq.extend(workspace, pick_request_id(request_id, job_id), ttl)
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
        """Reserve and commit in one call, for instant operations.

        Raises:
            InsufficientCredits, BudgetExceeded, RequestIdReused, OperationNotFound, ...
        """
        rid = pick_request_id(request_id, job_id)
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
        """Reserve, run the block, then commit its actual cost; release if it raises.

        The exception is re-raised after the release (a failed release is added to it as
        a note: the hold then expires by itself at its ttl).

        Example::

            with client.job(ws, "content.generate_post", job_id=job.id) as j:
                j.actual = generate(job)
            j.result.charged
        """
        rid = pick_request_id(request_id, job_id)
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
                await _flavours.aio_shielded(self.release(workspace, rid))
            except MeterError as e:
                failure.add_note(f"meter: releasing {rid!r} failed: {e}")
            raise
        handle.result = await self._call(self._meter.Commit, handle.commit_request())
