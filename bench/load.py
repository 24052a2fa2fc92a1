"""Load generators: asyncio clients over loopback gRPC, unary and Stream."""

from __future__ import annotations

import asyncio
import itertools
import random
import time
from dataclasses import dataclass, field

import grpc

from meterpb.v1 import meter_pb2 as pb
from meterpb.v1 import meter_pb2_grpc

OPERATION = "content.generate_post"
_ids = itertools.count()


def _rid(prefix: str) -> str:
    return f"{prefix}{next(_ids)}"


@dataclass
class Tally:
    pairs: int = 0
    errors: int = 0
    latencies: list[float] = field(default_factory=list)


def channel(target: str) -> grpc.aio.Channel:
    return grpc.aio.insecure_channel(
        target, options=[("grpc.max_receive_message_length", 16 << 20)]
    )


async def unary_pairs(target: str, workspaces: list[str], workers: int, seconds: float) -> Tally:
    """`workers` concurrent loops of Reserve then Commit, each on a random workspace."""
    tally = Tally()
    stop = time.perf_counter() + seconds
    async with channel(target) as ch:
        stub = meter_pb2_grpc.MeterStub(ch)

        async def worker(n: int) -> None:
            rnd = random.Random(n)
            while time.perf_counter() < stop:
                ws = rnd.choice(workspaces)
                job = _rid(f"u{n}-")
                try:
                    await stub.Reserve(
                        pb.ReserveRequest(
                            workspace_id=ws, request_id=job, amount=3, operation=OPERATION
                        )
                    )
                    await stub.Commit(pb.CommitRequest(workspace_id=ws, request_id=job, amount=2))
                    tally.pairs += 1
                except grpc.aio.AioRpcError:
                    tally.errors += 1

        await asyncio.gather(*(worker(i) for i in range(workers)))
    return tally


async def stream_pairs(
    target: str,
    workspaces: list[str],
    streams: int,
    in_flight: int,
    seconds: float,
    chunk: int = 200,
) -> Tally:
    """`streams` Streams, each keeping about `in_flight` jobs going: a reserve result
    is answered by its commit in the next request message."""
    tally = Tally()
    stop = time.perf_counter() + seconds
    async with channel(target) as ch:
        stub = meter_pb2_grpc.MeterStub(ch)

        async def one(n: int) -> None:
            rnd = random.Random(n)
            outbox: asyncio.Queue[list[pb.StreamItem] | None] = asyncio.Queue()
            open_jobs = 0

            def reserves(k: int) -> list[pb.StreamItem]:
                return [
                    pb.StreamItem(
                        reserve=pb.ReserveRequest(
                            workspace_id=rnd.choice(workspaces),
                            request_id=_rid(f"s{n}-"),
                            amount=3,
                            operation=OPERATION,
                        )
                    )
                    for _ in range(k)
                ]

            async def requests():
                while True:
                    items = await outbox.get()
                    if items is None:
                        return
                    yield pb.StreamRequest(items=items)

            call = stub.Stream(requests())
            first = in_flight
            while first > 0:
                k = min(chunk, first)
                outbox.put_nowait(reserves(k))
                first -= k
            open_jobs = in_flight
            async for response in call:
                commits = []
                for r in response.results:
                    kind = r.WhichOneof("result")
                    if r.status.code != 0:
                        tally.errors += 1
                        open_jobs -= 1
                    elif kind == "hold":
                        commits.append(
                            pb.StreamItem(
                                commit=pb.CommitRequest(
                                    workspace_id=r.workspace_id, request_id=r.request_id, amount=2
                                )
                            )
                        )
                    else:
                        tally.pairs += 1
                        open_jobs -= 1
                more = []
                if time.perf_counter() < stop:
                    done = len(response.results) - len(commits)
                    more = reserves(done)
                    open_jobs += done
                if commits or more:
                    outbox.put_nowait(commits + more)
                if open_jobs <= 0 and time.perf_counter() >= stop:
                    outbox.put_nowait(None)

        await asyncio.gather(*(one(i) for i in range(streams)))
    return tally


async def reserve_latency(target: str, workspaces: list[str], rate: float, seconds: float) -> Tally:
    """Open-loop Reserve calls at a fixed rate (each hold released after): latency per call."""
    tally = Tally()
    async with channel(target) as ch:
        stub = meter_pb2_grpc.MeterStub(ch)
        rnd = random.Random(7)
        pending: set[asyncio.Task[None]] = set()

        async def call() -> None:
            ws = rnd.choice(workspaces)
            job = _rid("l-")
            t0 = time.perf_counter()
            try:
                await stub.Reserve(
                    pb.ReserveRequest(
                        workspace_id=ws, request_id=job, amount=3, operation=OPERATION
                    )
                )
                tally.latencies.append(time.perf_counter() - t0)
                await stub.Commit(pb.CommitRequest(workspace_id=ws, request_id=job, amount=2))
                tally.pairs += 1
            except grpc.aio.AioRpcError:
                tally.errors += 1

        start = time.perf_counter()
        n = 0
        while (now := time.perf_counter()) - start < seconds:
            due = start + n / rate
            if due > now:
                await asyncio.sleep(due - now)
            t = asyncio.create_task(call())
            pending.add(t)
            t.add_done_callback(pending.discard)
            n += 1
        await asyncio.gather(*pending)
    return tally
