"""What the Citus scenarios share: a migrated database with servers on it, workspaces placed
on chosen workers, and a consumer of the whole event feed."""

from __future__ import annotations

import asyncio
import contextlib
import uuid
from collections import defaultdict
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import grpc

from meter.storage.db import migrate
from meterpb.v1 import events_pb2 as epb
from meterpb.v1 import events_pb2_grpc, meter_pb2_grpc
from meterpb.v1 import meter_pb2 as pb
from tests.citus.cluster import Cluster, Node
from tests.faults.servers import ServerProcess
from tests.support import Db, eventually, rid


def dbname(url: str) -> str:
    return url.rsplit("/", 1)[1].split("?")[0]


@dataclass
class Deployment:
    """A database of the cluster, migrated (so distributed), and `meter serve` processes on it."""

    cluster: Cluster
    url: str
    servers: list[ServerProcess]
    db: Db

    @property
    def name(self) -> str:
        return dbname(self.url)

    @property
    def targets(self) -> list[str]:
        return [s.target for s in self.servers]

    async def on(self, worker: Node, n: int, prefix: str = "ws-c") -> list[str]:
        """`n` new workspace ids whose shard group is on `worker` now."""
        return (await self.spread(n, prefix, [worker]))[worker.name]

    async def spread(
        self, n: int, prefix: str = "ws-c", workers: Sequence[Node] | None = None
    ) -> dict[str, list[str]]:
        """`n` new workspace ids for each worker (by name), placed there by Citus's hash."""
        wanted = list(workers or self.cluster.workers)
        out: dict[str, list[str]] = {w.name: [] for w in wanted}
        ports = {w.port: w.name for w in wanted}
        while any(len(v) < n for v in out.values()):
            ws = f"{prefix}{uuid.uuid4().hex[:10]}"
            _, port = await self.cluster.shard_of(self.name, ws)
            name = ports.get(port)
            if name is not None and len(out[name]) < n:
                out[name].append(ws)
        return out

    async def in_shards(self, shards: Sequence[int], n: int, prefix: str = "ws-c") -> list[str]:
        """`n` new workspace ids in each of these shard groups (by their workspaces shard)."""
        out: dict[int, list[str]] = {s: [] for s in shards}
        while any(len(v) < n for v in out.values()):
            ws = f"{prefix}{uuid.uuid4().hex[:10]}"
            shard, _ = await self.cluster.shard_of(self.name, ws)
            if shard in out and len(out[shard]) < n:
                out[shard].append(ws)
        return [w for ws in out.values() for w in ws]

    async def still_serving(self) -> None:
        """The same processes, never restarted, still running."""
        for s in self.servers:
            assert s.proc is not None
            assert s.proc.returncode is None, f"{s.target} exited"
            assert 1 == s.starts, f"{s.target} was restarted"


@contextlib.asynccontextmanager
async def deployment(
    cluster: Cluster, logs: Path, servers: int = 2, **env: str
) -> AsyncIterator[Deployment]:
    """A fresh database on the cluster, `meter migrate` run on it, `servers` processes on it;
    everything stopped and dropped after."""
    url = await cluster.database()
    await asyncio.to_thread(migrate, url)
    procs = [
        ServerProcess(url, log=logs / f"meter-{dbname(url)}-{i}.log", **env) for i in range(servers)
    ]
    d = Deployment(cluster, url, procs, Db(url))
    try:
        await asyncio.gather(*(p.start() for p in procs))
        yield d
    finally:
        await asyncio.gather(*(p.stop() for p in procs))
        d.db.close()
        await cluster.drop(dbname(url))


@dataclass
class FeedReader:
    """Pages ListEvents over the whole feed from where it starts until told to stop, and
    keeps every event of the workspaces it watches, in the order it read them."""

    target: str
    watched: set[str]
    token: str = ""
    seen: list[tuple[str, int]] = field(default_factory=list)
    pages: int = 0
    failures: int = 0
    _stop: asyncio.Event = field(default_factory=asyncio.Event)
    _task: asyncio.Task[None] | None = None

    async def start_at_end(self) -> None:
        """Start after every event there is now."""
        async with grpc.aio.insecure_channel(self.target) as ch:
            stub = events_pb2_grpc.EventsStub(ch)
            while True:
                got = await stub.ListEvents(
                    epb.ListEventsRequest(page_size=1000, page_token=self.token), timeout=10
                )
                self.token = got.next_page_token
                if not got.events:
                    break
        self._task = asyncio.create_task(self._run(), name="feed-reader")

    async def _run(self) -> None:
        async with grpc.aio.insecure_channel(self.target) as ch:
            stub = events_pb2_grpc.EventsStub(ch)
            while True:
                try:
                    got = await stub.ListEvents(
                        epb.ListEventsRequest(page_size=50, page_token=self.token), timeout=10
                    )
                except grpc.aio.AioRpcError as e:
                    # A page refused while a shard moves or a node is away is asked again
                    # from the same token: the reader must neither skip nor repeat.
                    if e.code() not in (
                        grpc.StatusCode.UNAVAILABLE,
                        grpc.StatusCode.DEADLINE_EXCEEDED,
                        grpc.StatusCode.ABORTED,
                    ):
                        raise
                    self.failures += 1
                    await asyncio.sleep(0.05)
                    continue
                self.pages += 1
                self.seen += [
                    (e.workspace_id, e.sequence)
                    for e in got.events
                    if e.workspace_id in self.watched
                ]
                self.token = got.next_page_token
                if not got.events:
                    if self._stop.is_set():
                        return
                    await asyncio.sleep(0.02)

    async def finish(self, stored: int, within: float = 30.0) -> None:
        """Read until `stored` watched events are seen (or the time is up), then stop."""
        assert self._task is not None

        async def caught_up() -> bool:
            if self._task is not None and self._task.done():
                self._task.result()  # the reader's own failure, if it failed
            return len(self.seen) >= stored

        try:
            await eventually(caught_up, within=within, interval=0.1)
        finally:
            self._stop.set()
            await self._task


async def write_events(
    targets: Sequence[str], workspaces: Sequence[str], stop: asyncio.Event, writers: int = 4
) -> int:
    """Grants of one credit and reservations refused for funds (an event each) on the
    workspaces through every target, until `stop`; each call retried with its request id
    while the cluster is busy. Returns how many calls were answered."""
    transient = {
        grpc.StatusCode.UNAVAILABLE,
        grpc.StatusCode.ABORTED,
        grpc.StatusCode.DEADLINE_EXCEEDED,
    }
    answered = 0

    async def call(stub: meter_pb2_grpc.MeterStub, request: Any) -> None:
        nonlocal answered
        method = stub.GrantCredits if isinstance(request, pb.GrantCreditsRequest) else stub.Reserve
        for _ in range(200):
            try:
                await method(request, timeout=5)
            except grpc.aio.AioRpcError as e:
                if e.code() in transient:
                    await asyncio.sleep(0.05)
                    continue
                if e.code() != grpc.StatusCode.FAILED_PRECONDITION:  # refused for funds
                    raise
            answered += 1
            return
        raise AssertionError(f"{request} never answered")

    async def writer(n: int) -> None:
        async with grpc.aio.insecure_channel(targets[n % len(targets)]) as ch:
            stub = meter_pb2_grpc.MeterStub(ch)
            i = 0
            while not stop.is_set():
                ws = workspaces[(n + i) % len(workspaces)]
                i += 1
                await call(
                    stub, pb.GrantCreditsRequest(workspace_id=ws, request_id=rid("e"), amount=1)
                )
                await call(
                    stub, pb.ReserveRequest(workspace_id=ws, request_id=rid(), amount=10**12)
                )

    await asyncio.gather(*(writer(n) for n in range(writers)))
    return answered


def feed_problems(seen: list[tuple[str, int]], stored: list[tuple[str, int]]) -> list[str]:
    """What a consumer's reading of the feed got wrong against the events stored: events
    missed or seen twice, a workspace's events out of sequence order, gaps in a workspace's
    sequences."""
    problems = []
    counts: dict[tuple[str, int], int] = defaultdict(int)
    for e in seen:
        counts[e] += 1
    twice = [e for e, n in counts.items() if n > 1]
    if twice:
        problems.append(f"{len(twice)} events seen more than once, e.g. {twice[:5]}")
    missed = sorted(set(stored) - set(seen))
    if missed:
        problems.append(f"{len(missed)} events never seen, e.g. {missed[:5]}")
    extra = sorted(set(seen) - set(stored))
    if extra:
        problems.append(f"{len(extra)} events seen that are not stored, e.g. {extra[:5]}")
    by_ws: dict[str, list[int]] = defaultdict(list)
    for ws, seq in seen:
        by_ws[ws].append(seq)
    for ws, seqs in by_ws.items():
        if seqs != sorted(seqs):
            problems.append(f"{ws}: read out of sequence order: {seqs[:20]}")
    stored_by_ws: dict[str, list[int]] = defaultdict(list)
    for ws, seq in stored:
        stored_by_ws[ws].append(seq)
    for ws, seqs in stored_by_ws.items():
        if sorted(seqs) != list(range(1, len(seqs) + 1)):
            problems.append(f"{ws}: stored sequences have gaps: {sorted(seqs)[:20]}")
    return problems


def stored_events(db: Db, workspaces: Sequence[str]) -> list[tuple[str, int]]:
    return [
        (r.workspace_id, int(r.sequence))
        for r in db.rows(
            "SELECT workspace_id, sequence FROM events WHERE workspace_id = ANY(:w)",
            w=list(workspaces),
        )
    ]
