"""Retrying clients and the jobs they run: reserve → commit or release, and charges.

The retry loop is written out here rather than borrowed from meter.client so that every
attempt is recorded (the checker needs to know which calls ended unknown) and so that
scenarios can choose deadlines shorter than the work. Like meter.client it retries the
*same request*, so the same request id, with exponential backoff and full jitter.
"""

from __future__ import annotations

import asyncio
import contextlib
import random
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import grpc
from google.protobuf.duration_pb2 import Duration

from meterpb.v1 import meter_pb2 as pb
from meterpb.v1 import meter_pb2_grpc
from tests.faults.history import Call, History
from tests.support import failure

RETRYABLE = {"UNAVAILABLE", "DEADLINE_EXCEEDED", "ABORTED", "RESOURCE_EXHAUSTED"}
# Grants are the setup, not the subject: they are given far more credits than the jobs use,
# so no job is ever refused for funds and every answer is predictable by the model.
GRANT = 1_000_000


@dataclass
class Policy:
    deadline: float = 2.0  # the first attempt's
    growth: float = 1.0  # each retry's deadline is this much longer (up to 5 s)
    budget: float = 45.0  # all attempts of one call
    backoff: float = 0.02
    max_backoff: float = 0.5


class Client:
    """Calls with retries across one or more targets (replicas, or a proxy in front)."""

    def __init__(self, targets: Sequence[str], history: History, policy: Policy) -> None:
        self.channels = [grpc.aio.insecure_channel(t) for t in targets]
        self.stubs = [meter_pb2_grpc.MeterStub(ch) for ch in self.channels]
        self.history = history
        self.policy = policy

    async def close(self) -> None:
        for ch in self.channels:
            await ch.close(None)

    async def call(self, kind: str, request: Any, params: tuple[Any, ...]) -> Call:
        c = self.history.add(Call(kind, request.workspace_id, request.request_id, params))
        method = {
            "reserve": "Reserve",
            "commit": "Commit",
            "release": "Release",
            "charge": "Charge",
            "grant": "GrantCredits",
        }[kind]
        p = self.policy
        start = time.monotonic()
        first = random.randrange(len(self.stubs))
        while True:
            stub = self.stubs[(first + c.attempts) % len(self.stubs)]
            c.attempts += 1
            try:
                answer = await getattr(stub, method)(
                    request,
                    timeout=min(p.deadline * p.growth ** (c.attempts - 1), 5.0),
                    wait_for_ready=c.attempts > 1,
                )
            except grpc.aio.AioRpcError as e:
                f = failure(e)
                if f.code.name not in RETRYABLE:
                    c.outcome, c.code, c.reason = "refused", f.code.name, f.reason
                    break
                c.transient.append(f.code.name)
                left = p.budget - (time.monotonic() - start)
                if left <= 0:
                    break  # unknown
                cap = min(p.max_backoff, p.backoff * 2 ** min(c.attempts, 10))
                await asyncio.sleep(min(max(random.uniform(0, cap), f.retry_delay or 0), left))
                continue
            c.outcome, c.answer = "ok", _answer(kind, answer)
            break
        c.done = time.monotonic()
        return c


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
    ws: str, rid: str, amount: int, ttl: float
) -> tuple[pb.ReserveRequest, tuple[Any, ...]]:
    d = Duration()
    d.FromMilliseconds(int(ttl * 1000))
    return (
        pb.ReserveRequest(workspace_id=ws, request_id=rid, amount=amount, ttl=d),
        (amount, ttl),
    )


def commit(ws: str, rid: str, actual: int) -> tuple[pb.CommitRequest, tuple[Any, ...]]:
    return pb.CommitRequest(workspace_id=ws, request_id=rid, amount=actual), (actual,)


def release(ws: str, rid: str) -> tuple[pb.ReleaseRequest, tuple[Any, ...]]:
    return pb.ReleaseRequest(workspace_id=ws, request_id=rid), ()


def charge(ws: str, rid: str, amount: int) -> tuple[pb.ChargeRequest, tuple[Any, ...]]:
    return pb.ChargeRequest(workspace_id=ws, request_id=rid, amount=amount), (amount,)


def grant(ws: str, rid: str, amount: int = GRANT) -> tuple[pb.GrantCreditsRequest, tuple[Any, ...]]:
    return pb.GrantCreditsRequest(workspace_id=ws, request_id=rid, amount=amount), (amount,)


@dataclass
class Mix:
    """How a scenario's jobs behave."""

    ttl: float = 60.0  # hold TTL; short ones race the sweeper
    replay: float = 0.15  # repeat an answered call identically
    reuse: float = 0.1  # repeat it with changed parameters (REQUEST_ID_REUSED)
    race: float = 0.0  # fire a commit and a release (or two commits) at once
    think: float = 0.0  # the "work" between Reserve and Commit, in seconds (upper bound)
    abandon: float = 0.0  # share of holds whose worker dies: never finished, left to expire


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
            c = await self.client.call("grant", *grant(ws, f"{self.tag}-grant-{ws}"))
            assert "ok" == c.outcome, c

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
        roll = random.random()
        if roll < 0.2:
            amount = random.randint(1, 9)
            req = charge(ws, rid, amount)
            c = await self.call("charge", req)
            if c.outcome == "ok":
                await self.maybe_repeat("charge", req, ("charge", charge(ws, rid, amount + 1)))
            return
        amount = random.randint(2, 12)
        req = reserve(ws, rid, amount, m.ttl)
        if random.random() < m.race:
            # Duplicates racing: exactly one hold, the same answer to both.
            c, _ = await asyncio.gather(self.call("reserve", req), self.call("reserve", req))
        else:
            c = await self.call("reserve", req)
        if c.outcome != "ok":
            return
        await self.maybe_repeat("reserve", req, ("reserve", reserve(ws, rid, amount + 1, m.ttl)))
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
) -> Any:
    """Run jobs in the background while the body injects faults; stop and join after it."""
    client = Client(targets, history, policy or Policy())
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
