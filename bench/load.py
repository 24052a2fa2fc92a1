"""Load generators: asyncio clients over loopback gRPC, unary and Stream.

They share the machine with the server and PostgreSQL, so each is written to cost little
per job: Stream messages are built in place (no per-item message copies), results are told
apart by their oneof alone, and the clock is read once per message, not once per item.
Every loop ends by a deadline, and every drain is bounded, so no phase can hang the run.
"""

from __future__ import annotations

import asyncio
import itertools
import random
import statistics
import threading
import time
from collections.abc import AsyncIterator, Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import grpc

from meterpb.v1 import meter_pb2 as pb
from meterpb.v1 import meter_pb2_grpc

OPERATION = "content.generate_post"
CALL_TIMEOUT_S = 30.0
# After its deadline a load waits at most this long for the jobs it has in flight.
DRAIN_S = 30.0
_ids = itertools.count()


def _rid(prefix: str) -> str:
    return f"{prefix}{next(_ids)}"


@dataclass
class Tally:
    """What a load got done. `series[i]` counts the pairs finished in second i after start."""

    start: float = field(default_factory=time.perf_counter)
    pairs: int = 0
    errors: int = 0
    messages: int = 0
    latencies: list[float] = field(default_factory=list)
    lags: list[float] = field(default_factory=list)
    series: list[int] = field(default_factory=list)

    def count(self, now: float, n: int) -> None:
        if n <= 0:
            return
        i = int(now - self.start)
        if i >= len(self.series):
            self.series.extend([0] * (i + 1 - len(self.series)))
        self.series[i] += n
        self.pairs += n

    def rate(self, seconds: int, after: int = 0) -> float:
        """Pairs per second finished inside the `seconds` that follow the first `after`
        (not counting the drain)."""
        return sum(self.series[after : after + seconds]) / seconds if seconds > 0 else 0.0

    def windows(self, width: int) -> list[float]:
        """Pairs per second over consecutive whole windows of `width` seconds."""
        whole = len(self.series) // width
        return [sum(self.series[i * width : (i + 1) * width]) / width for i in range(whole)]


def channel(target: str) -> grpc.aio.Channel:
    return grpc.aio.insecure_channel(
        target, options=[("grpc.max_receive_message_length", 16 << 20)]
    )


def percentile_ms(values: Sequence[float], p: float) -> float | None:
    """The p-quantile (0..1) of seconds, in milliseconds, by the nearest-rank rule."""
    if not values:
        return None
    ordered = sorted(values)
    rank = min(len(ordered) - 1, max(0, int(len(ordered) * p + 0.999999) - 1))
    return ordered[rank] * 1000


async def unary_pairs(
    target: str, workspaces: list[str], workers: int, seconds: int, record: bool = False
) -> Tally:
    """`workers` closed loops of Reserve then Commit, each on a random workspace; with
    `record`, each Reserve's latency."""
    tally = Tally()
    stop = tally.start + seconds
    async with channel(target) as ch:
        stub = meter_pb2_grpc.MeterStub(ch)

        async def worker(n: int) -> None:
            rnd = random.Random(n)
            prefix = f"u{n}-"
            while (t0 := time.perf_counter()) < stop:
                ws = rnd.choice(workspaces)
                job = _rid(prefix)
                try:
                    await stub.Reserve(
                        pb.ReserveRequest(
                            workspace_id=ws, request_id=job, amount=3, operation=OPERATION
                        ),
                        timeout=CALL_TIMEOUT_S,
                    )
                    if record:
                        tally.latencies.append(time.perf_counter() - t0)
                    await stub.Commit(
                        pb.CommitRequest(workspace_id=ws, request_id=job, amount=2),
                        timeout=CALL_TIMEOUT_S,
                    )
                    tally.count(time.perf_counter(), 1)
                except grpc.aio.AioRpcError:
                    tally.errors += 1

        await asyncio.gather(*(worker(i) for i in range(workers)))
    return tally


@dataclass(frozen=True)
class Job:
    """Who a reserve is for: its actor and labels (budgets govern them)."""

    actor_id: str = ""
    labels: dict[str, str] = field(default_factory=dict)


class _StreamJobs:
    """One Stream that keeps `in_flight` jobs open: each reserve result is answered by its
    commit in the next request message, and each finished job by a new reserve."""

    def __init__(
        self,
        n: int,
        workspaces: list[str],
        in_flight: int,
        stop: float,
        tally: Tally,
        job: Job,
    ) -> None:
        self.job = job
        self.pick = random.Random(n).choice
        self.prefix = f"s{n}-"
        self.workspaces = workspaces
        self.in_flight = in_flight
        self.stop = stop
        self.tally = tally
        self.open = 0
        self.outbox: asyncio.Queue[pb.StreamRequest | None] = asyncio.Queue()

    def add_reserves(self, req: pb.StreamRequest, k: int) -> None:
        add, pick, ws = req.items.add, self.pick, self.workspaces
        for _ in range(k):
            r = add().reserve
            r.workspace_id = pick(ws)
            r.request_id = _rid(self.prefix)
            r.amount = 3
            r.operation = OPERATION
            if self.job.actor_id:
                r.actor_id = self.job.actor_id
            if self.job.labels:
                r.labels.update(self.job.labels)
        self.open += k

    async def requests(self) -> AsyncIterator[pb.StreamRequest]:
        while (req := await self.outbox.get()) is not None:
            yield req

    def answer(self, response: pb.StreamResponse, now: float) -> None:
        req = pb.StreamRequest()
        add = req.items.add
        finished = pairs = 0
        for r in response.results:
            kind = r.WhichOneof("result")
            if kind == "hold":
                c = add().commit
                c.workspace_id = r.workspace_id
                c.request_id = r.request_id
                c.amount = 2
            else:
                finished += 1
                pairs += kind == "commit"
        self.tally.count(now, pairs)
        self.tally.errors += finished - pairs
        self.open -= finished
        if now < self.stop and finished:
            self.add_reserves(req, finished)
        if len(req.items):
            self.outbox.put_nowait(req)
        elif self.open <= 0:
            self.outbox.put_nowait(None)

    async def run(self, stub: meter_pb2_grpc.MeterStub, chunk: int) -> None:
        for first in range(0, self.in_flight, chunk):
            req = pb.StreamRequest()
            self.add_reserves(req, min(chunk, self.in_flight - first))
            self.outbox.put_nowait(req)
        # The stubs are typed for the blocking API; on an aio channel this is an aio call.
        call: Any = stub.Stream(self.requests())  # type: ignore[arg-type]
        try:
            async with asyncio.timeout_at(_loop_time_at(self.stop + DRAIN_S)):
                async for response in call:
                    self.answer(response, time.perf_counter())
        except TimeoutError:
            call.cancel()
            self.tally.errors += self.open


def _loop_time_at(perf_deadline: float) -> float:
    """The event loop's clock reading at a time.perf_counter() deadline."""
    return asyncio.get_running_loop().time() + (perf_deadline - time.perf_counter())


async def stream_pairs(
    target: str,
    workspaces: list[str],
    streams: int,
    in_flight: int,
    seconds: int,
    chunk: int = 200,
    job: Job | None = None,
) -> Tally:
    """`streams` Streams, each keeping `in_flight` jobs open for `seconds`, then drained;
    each reserve with `job`'s actor and labels."""
    tally = Tally()
    stop = tally.start + seconds
    job = job or Job()
    async with channel(target) as ch:
        stub = meter_pb2_grpc.MeterStub(ch)
        jobs = [_StreamJobs(n, workspaces, in_flight, stop, tally, job) for n in range(streams)]
        await asyncio.gather(*(j.run(stub, chunk) for j in jobs))
    return tally


class _Arrivals(threading.Thread):
    """A Poisson process of job arrivals, on a thread of its own.

    time.sleep wakes within tens of microseconds, where the event loop's timers round their
    waits up to the next millisecond, and a late arrival is latency of this client's making.
    Each arrival is handed to the loop, which starts its job at once."""

    def __init__(
        self,
        loop: asyncio.AbstractEventLoop,
        spawn: Callable[[float, str], None],
        finished: asyncio.Event,
        workspaces: list[str],
        rate: float,
        window: tuple[float, float],
        seed: int,
    ) -> None:
        super().__init__(daemon=True)
        self.loop, self.spawn, self.finished, self.workspaces = loop, spawn, finished, workspaces
        self.rate, self.window, self.seed = rate, window, seed

    def run(self) -> None:
        rnd = random.Random(self.seed)
        start, end = self.window
        due = start + rnd.expovariate(self.rate)
        try:
            while due < end:
                delay = due - time.perf_counter()
                if delay > 0:
                    time.sleep(delay)
                self.loop.call_soon_threadsafe(self.spawn, due, rnd.choice(self.workspaces))
                due += rnd.expovariate(self.rate)
        finally:
            self.loop.call_soon_threadsafe(self.finished.set)


async def open_loop(
    target: str, workspaces: list[str], rate: float, seconds: int, seed: int = 7
) -> Tally:
    """Jobs (a Reserve, then its Commit) arriving as a seeded Poisson process at `rate`/s.

    Each job is its own task, started at its arrival whatever the jobs before it are doing,
    and its Reserve's latency runs from the scheduled arrival: a stall shows in every job it
    delays rather than holding back the arrivals (no coordinated omission). `lags` is how
    late each job's task began, which is this client's own share of the latency."""
    tally = Tally()
    async with channel(target) as ch:
        stub = meter_pb2_grpc.MeterStub(ch)

        async def job(due: float, ws: str) -> None:
            tally.lags.append(time.perf_counter() - due)
            rid = _rid("l-")
            try:
                await stub.Reserve(
                    pb.ReserveRequest(
                        workspace_id=ws, request_id=rid, amount=3, operation=OPERATION
                    ),
                    timeout=CALL_TIMEOUT_S,
                )
                tally.latencies.append(time.perf_counter() - due)
                await stub.Commit(
                    pb.CommitRequest(workspace_id=ws, request_id=rid, amount=2),
                    timeout=CALL_TIMEOUT_S,
                )
                tally.count(time.perf_counter(), 1)
            except grpc.aio.AioRpcError:
                tally.errors += 1

        tasks: set[asyncio.Task[None]] = set()

        def spawn(due: float, ws: str) -> None:
            task = asyncio.ensure_future(job(due, ws))
            tasks.add(task)
            task.add_done_callback(tasks.discard)

        window = (tally.start, tally.start + seconds)
        finished = asyncio.Event()
        clock = _Arrivals(
            asyncio.get_running_loop(), spawn, finished, workspaces, rate, window, seed
        )
        clock.start()
        await asyncio.wait_for(finished.wait(), timeout=seconds + DRAIN_S)
        await _drain(tasks, tally)
    return tally


async def _drain(tasks: set[asyncio.Task[None]], tally: Tally) -> None:
    if not tasks:
        return
    _, late = await asyncio.wait(set(tasks), timeout=DRAIN_S)
    for task in late:
        task.cancel()
    tally.errors += len(late)


async def watch_balances(target: str, workspaces: list[str], seconds: int) -> Tally:
    """One WatchBalance per workspace for `seconds`, each just counting what it receives."""
    tally = Tally()
    async with channel(target) as ch:
        stub = meter_pb2_grpc.MeterStub(ch)
        calls = [stub.WatchBalance(pb.WatchBalanceRequest(workspace_id=w)) for w in workspaces]

        async def consume(call: grpc.aio.UnaryStreamCall) -> None:  # type: ignore[type-arg]
            try:
                async for _ in call:
                    tally.messages += 1
            except grpc.aio.AioRpcError as e:
                if e.code() != grpc.StatusCode.CANCELLED:
                    tally.errors += 1

        tasks = [asyncio.create_task(consume(c)) for c in calls]
        await asyncio.sleep(seconds)
        for c in calls:
            c.cancel()
        await asyncio.wait(tasks, timeout=DRAIN_S)
    return tally


async def history_reads(target: str, workspaces: list[str], readers: int, seconds: int) -> Tally:
    """`readers` closed loops of ListTransactions (first page of 50), latency per call."""
    tally = Tally()
    stop = tally.start + seconds
    async with channel(target) as ch:
        stub = meter_pb2_grpc.MeterStub(ch)

        async def reader(n: int) -> None:
            rnd = random.Random(1000 + n)
            while (t0 := time.perf_counter()) < stop:
                req = pb.ListTransactionsRequest(workspace_id=rnd.choice(workspaces), page_size=50)
                try:
                    await stub.ListTransactions(req, timeout=CALL_TIMEOUT_S)
                    tally.latencies.append(time.perf_counter() - t0)
                    tally.messages += 1
                except grpc.aio.AioRpcError:
                    tally.errors += 1

        await asyncio.gather(*(reader(i) for i in range(readers)))
    return tally


async def first_page_ms(target: str, workspace: str, n: int = 50) -> float:
    """Median latency of a workspace's first page of 50 journal entries, one call at a time."""
    async with channel(target) as ch:
        stub = meter_pb2_grpc.MeterStub(ch)
        times = []
        for _ in range(n):
            t0 = time.perf_counter()
            await stub.ListTransactions(
                pb.ListTransactionsRequest(workspace_id=workspace, page_size=50),
                timeout=CALL_TIMEOUT_S,
            )
            times.append((time.perf_counter() - t0) * 1000)
    return statistics.median(times)
