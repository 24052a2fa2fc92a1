"""Retrying clients and the jobs they run: reserve → commit or release, and charges.

The retry loop is written out here rather than borrowed from meter.client so that every
attempt is recorded (the checker needs to know which calls ended unknown) and so that
scenarios can choose deadlines shorter than the work. Like meter.client it retries the
*same request*, so the same request id, with exponential backoff and full jitter.

Calls go as unary RPCs, or (`stream=True`) as items of Meter.Stream through meter.client's
StreamSession, one attempt per session call: a broken stream fails its items in flight,
and their retries ride a new stream.
"""

from __future__ import annotations

import asyncio
import contextlib
import random
import time
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import grpc
from google.protobuf.duration_pb2 import Duration

from meter.client import AsyncMeterClient, RetryPolicy
from meter.client import MeterError as ClientError
from meter.client.stream import StreamSession
from meterpb.v1 import meter_pb2 as pb
from meterpb.v1 import meter_pb2_grpc
from tests.faults.history import Call, History
from tests.support import eventually, failure

RETRYABLE = {"UNAVAILABLE", "DEADLINE_EXCEEDED", "ABORTED", "RESOURCE_EXHAUSTED"}
# Grants are the setup, not the subject: they are given far more credits than the jobs use,
# so no job is ever refused for funds and every answer is predictable by the model.
GRANT = 1_000_000
# The members jobs run for: "" is no member; a scenario may limit the others.
ACTORS = ("", "ana", "bo", "cy")


@dataclass
class Policy:
    deadline: float = 2.0  # the first attempt's
    growth: float = 1.0  # each retry's deadline is this much longer (up to 5 s)
    budget: float = 45.0  # all attempts of one call
    backoff: float = 0.02
    max_backoff: float = 0.5


class Client:
    """Calls with retries across one or more targets (replicas, or a proxy in front)."""

    def __init__(
        self, targets: Sequence[str], history: History, policy: Policy, *, stream: bool = False
    ) -> None:
        self.channels = [grpc.aio.insecure_channel(t) for t in targets]
        self.stubs = [meter_pb2_grpc.MeterStub(ch) for ch in self.channels]
        self.history = history
        self.policy = policy
        # One attempt per session call: the retries are this loop's, and recorded.
        once = RetryPolicy(max_attempts=1, attempt_timeout=policy.deadline, budget=policy.budget)
        self.stream_clients = [AsyncMeterClient(t, retry=once) for t in targets] if stream else []
        self.sessions = [c.stream_session() for c in self.stream_clients]

    async def close(self) -> None:
        for session in self.sessions:
            with contextlib.suppress(ClientError):
                await session.close()
        for client in self.stream_clients:
            await client.close()
        for ch in self.channels:
            await ch.close(None)

    async def _attempt(self, target: int, kind: str, request: Any, attempt: int) -> Any:
        """One attempt; raises an AioRpcError or a meter.client MeterError when it fails.
        Over Stream, every attempt's deadline is the policy's first one."""
        if not self.sessions or kind in ("grant", "confirm"):
            p = self.policy
            return await getattr(self.stubs[target], _METHODS[kind])(
                request,
                timeout=min(p.deadline * p.growth ** (attempt - 1), 5.0),
                # Retries wait for the channel to reconnect, within their deadline.
                wait_for_ready=attempt > 1,
            )
        return await _over_stream(self.sessions[target], kind, request)

    async def call(self, kind: str, request: Any, params: tuple[Any, ...]) -> Call:
        c = self.history.add(Call(kind, request.workspace_id, request.request_id, params))
        p = self.policy
        start = time.monotonic()
        first = random.randrange(len(self.stubs))
        while True:
            target = (first + c.attempts) % len(self.stubs)
            c.attempts += 1
            try:
                answer = await self._attempt(target, kind, request, c.attempts)
            except (grpc.aio.AioRpcError, ClientError) as e:
                code, reason, delay = _failure(e)
                if code not in RETRYABLE:
                    c.outcome, c.code, c.reason = "refused", code, reason
                    break
                c.transient.append(code)
                left = p.budget - (time.monotonic() - start)
                if left <= 0:
                    break  # unknown
                cap = min(p.max_backoff, p.backoff * 2 ** min(c.attempts, 10))
                await asyncio.sleep(min(max(random.uniform(0, cap), delay or 0), left))
                continue
            c.outcome, c.answer = "ok", _answer(kind, answer)
            break
        c.done = time.monotonic()
        return c


_METHODS = {
    "reserve": "Reserve",
    "commit": "Commit",
    "release": "Release",
    "charge": "Charge",
    "grant": "GrantCredits",
    "confirm": "ConfirmGrant",
}


def _failure(e: grpc.aio.AioRpcError | ClientError) -> tuple[str, str, float | None]:
    """A failed attempt's status code name, ErrorInfo reason and RetryInfo delay."""
    if isinstance(e, ClientError):
        return e.code.name, e.reason, e.retry_delay
    f = failure(e)
    return f.code.name, f.reason, f.retry_delay


async def _over_stream(session: StreamSession, kind: str, r: Any) -> Any:
    """The call as a Stream item, answered in the unary response's shape. A Release over
    Stream answers with the hold only: `released` is then None (its state tells)."""
    if kind == "reserve":
        ttl = r.ttl.ToTimedelta() if r.HasField("ttl") else None
        return pb.ReserveResponse(
            hold=await session.reserve(r.workspace_id, r.request_id, amount=r.amount, ttl=ttl)
        )
    if kind == "commit":
        return await session.commit(r.workspace_id, r.request_id, amount=r.amount)
    if kind == "charge":
        return await session.charge(r.workspace_id, r.request_id, amount=r.amount)
    if kind == "release":
        return _StreamRelease(await session.release(r.workspace_id, r.request_id))
    raise AssertionError(f"{kind} does not go over Stream")


@dataclass
class _StreamRelease:
    hold: pb.Hold
    released: int | None = None


def _answer(kind: str, a: Any) -> dict[str, Any]:
    if kind == "reserve":
        return {"hold_id": a.hold.hold_id, "amount": a.hold.amount, "state": a.hold.state}
    if kind in ("commit", "charge"):
        return {
            "hold_id": a.hold.hold_id,
            "charged": a.charged,
            "released": a.released,
            "shortfall": a.shortfall,
            "late": getattr(a, "late", False),
        }
    if kind == "release":
        return {"hold_id": a.hold.hold_id, "released": a.released, "state": a.hold.state}
    return {"entry_id": a.entry.entry_id, "amount": a.entry.amount}


def reserve(
    ws: str, rid: str, amount: int, ttl: float, actor: str = ""
) -> tuple[pb.ReserveRequest, tuple[Any, ...]]:
    d = Duration()
    d.FromMilliseconds(int(ttl * 1000))
    return (
        pb.ReserveRequest(workspace_id=ws, request_id=rid, amount=amount, ttl=d, actor_id=actor),
        (amount, ttl, actor),
    )


def commit(ws: str, rid: str, actual: int) -> tuple[pb.CommitRequest, tuple[Any, ...]]:
    return pb.CommitRequest(workspace_id=ws, request_id=rid, amount=actual), (actual,)


def release(ws: str, rid: str) -> tuple[pb.ReleaseRequest, tuple[Any, ...]]:
    return pb.ReleaseRequest(workspace_id=ws, request_id=rid), ()


def charge(
    ws: str, rid: str, amount: int, actor: str = ""
) -> tuple[pb.ChargeRequest, tuple[Any, ...]]:
    return (
        pb.ChargeRequest(workspace_id=ws, request_id=rid, amount=amount, actor_id=actor),
        (amount, actor),
    )


def grant(
    ws: str, rid: str, amount: int = GRANT, pending: bool = False
) -> tuple[pb.GrantCreditsRequest, tuple[Any, ...]]:
    request = pb.GrantCreditsRequest(
        workspace_id=ws, request_id=rid, amount=amount, pending=pending
    )
    return request, (amount,)


def confirm(ws: str, rid: str) -> tuple[pb.ConfirmGrantRequest, tuple[Any, ...]]:
    return pb.ConfirmGrantRequest(workspace_id=ws, request_id=rid), ()


@dataclass
class Mix:
    """How a scenario's jobs behave."""

    ttl: float = 60.0  # hold TTL; short ones race the sweeper
    replay: float = 0.15  # repeat an answered call identically
    reuse: float = 0.1  # repeat it with changed parameters (REQUEST_ID_REUSED)
    race: float = 0.0  # fire a commit and a release (or two commits) at once
    think: float = 0.0  # the "work" between Reserve and Commit, in seconds (upper bound)
    abandon: float = 0.0  # share of holds whose worker dies: never finished, left to expire
    limit: int = 0  # each member's monthly limit (0: none), which its jobs then run into


class Jobs:
    """Workers that run jobs until told to stop; each job is recorded in the history."""

    def __init__(self, client: Client, workspaces: Sequence[str], mix: Mix, tag: str) -> None:
        self.client = client
        self.workspaces = list(workspaces)
        self.mix = mix
        self.tag = tag
        self.stopping = asyncio.Event()
        self._n = 0

    async def setup(self) -> None:
        for ws in self.workspaces:
            # A purchase that is pending until its payment is confirmed, both retried.
            payment = f"{self.tag}-grant-{ws}"
            c = await self.client.call("grant", *grant(ws, payment, pending=True))
            assert "ok" == c.outcome, c
            c = await self.client.call("confirm", *confirm(ws, payment))
            assert "ok" == c.outcome, c
            if self.mix.limit:
                for actor in ACTORS[1:]:
                    await self.client.stubs[0].SetMemberLimit(
                        pb.SetMemberLimitRequest(
                            workspace_id=ws,
                            actor_id=actor,
                            period=pb.LIMIT_PERIOD_MONTH,
                            limit=self.mix.limit,
                        ),
                        timeout=10,
                    )

    async def run(self, workers: int, max_jobs: int) -> None:
        async def worker() -> None:
            while not self.stopping.is_set() and self._n < max_jobs:
                self._n += 1
                self.client.history.jobs += 1
                await self.job(self._n)

        await asyncio.gather(*(worker() for _ in range(workers)))

    async def call(self, kind: str, req: tuple[Any, tuple[Any, ...]]) -> Call:
        return await self.client.call(kind, *req)

    async def maybe_repeat(
        self, kind: str, req: tuple[Any, tuple[Any, ...]], changed: tuple[str, Any] | None
    ) -> None:
        """Replay an answered call identically, or send its request id with other parameters."""
        if random.random() < self.mix.replay:
            await self.call(kind, req)
        if changed is not None and random.random() < self.mix.reuse:
            await self.call(*changed)

    async def job(self, n: int) -> None:
        ws = random.choice(self.workspaces)
        rid = f"{self.tag}-{n}"
        m = self.mix
        actor = random.choice(ACTORS)
        roll = random.random()
        if roll < 0.2:
            amount = random.randint(1, 9)
            req = charge(ws, rid, amount, actor)
            c = await self.call("charge", req)
            if c.outcome == "ok":
                changed = charge(ws, rid, amount + 1, actor)
                await self.maybe_repeat("charge", req, ("charge", changed))
            return
        amount = random.randint(2, 12)
        req = reserve(ws, rid, amount, m.ttl, actor)
        if random.random() < m.race:
            # Duplicates racing: exactly one hold, the same answer to both.
            c, _ = await asyncio.gather(self.call("reserve", req), self.call("reserve", req))
        else:
            c = await self.call("reserve", req)
        if c.outcome != "ok":
            return
        changed_r = reserve(ws, rid, amount + 1, m.ttl, actor)
        await self.maybe_repeat("reserve", req, ("reserve", changed_r))
        if random.random() < m.abandon:
            return
        if m.think:
            await asyncio.sleep(random.uniform(0, m.think))
        actual = random.randint(0, amount + 2)
        if random.random() < m.race:
            # Two finishes at once: a commit against a release, or a duplicate commit.
            other = release(ws, rid) if random.random() < 0.5 else commit(ws, rid, actual)
            await asyncio.gather(
                self.call("commit", commit(ws, rid, actual)),
                self.call("release" if other[1] == () else "commit", other),
            )
            return
        if roll < 0.35:
            req_r = release(ws, rid)
            c = await self.call("release", req_r)
            if c.outcome == "ok":
                await self.maybe_repeat("release", req_r, ("commit", commit(ws, rid, actual)))
            return
        req_c = commit(ws, rid, actual)
        c = await self.call("commit", req_c)
        if c.outcome == "ok":
            await self.maybe_repeat("commit", req_c, ("commit", commit(ws, rid, actual + 1)))


@contextlib.asynccontextmanager
async def load(
    targets: Sequence[str],
    history: History,
    workspaces: Sequence[str],
    *,
    tag: str,
    mix: Mix | None = None,
    policy: Policy | None = None,
    workers: int = 16,
    max_jobs: int = 100_000,
    stream: bool = False,
) -> Any:
    """Run jobs in the background while the body injects faults; stop and join after it."""
    client = Client(targets, history, policy or Policy(), stream=stream)
    jobs = Jobs(client, workspaces, mix or Mix(), tag)
    try:
        await jobs.setup()
        task = asyncio.create_task(jobs.run(workers, max_jobs))
        try:
            yield jobs
        finally:
            jobs.stopping.set()
            await task
    finally:
        await client.close()


def workspaces(n: int) -> list[str]:
    return [f"ws-f{uuid.uuid4().hex[:10]}" for _ in range(n)]


async def answered(history: History, more: int, within: float = 30.0) -> None:
    """Wait until the clients have `more` further answers than now."""
    target = _answers(history) + more

    async def enough() -> bool:
        return _answers(history) >= target

    await eventually(enough, within=within)


def _answers(history: History) -> int:
    return sum(1 for c in history.calls if c.outcome == "ok")
