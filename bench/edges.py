"""Load at the edges: bursts of watch opens, many watchers, many tiny Streams, a long soak.

`python -m bench.edges [--only opens,watchers,streams,soak] [--minutes 30] [--repeat N]`
starts `meter serve` on a fresh database and drives each edge from client processes of
their own (spawned, several per edge), so that building and reading thousands of calls in
Python does not count as the server's latency. Times are CLOCK_MONOTONIC readings, which
every process on the machine shares: a burst starts at one agreed instant in all of them.
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import multiprocessing as mp
import os
import random
import time
from collections.abc import Sequence
from multiprocessing.connection import Connection
from pathlib import Path
from typing import Any

import grpc
import sqlalchemy as sa

from bench import db, server
from bench.load import percentile_ms
from meter.storage.db import normalize_url
from meterpb.v1 import meter_pb2 as pb
from meterpb.v1 import meter_pb2_grpc

OPERATION = "content.generate_post"
CALL_TIMEOUT_S = 30.0
# Client processes per edge: enough that no one of them is the bottleneck on two cores.
PROCESSES = 4
STREAMS_PER_CHANNEL = 100


def _channels(target: str, n: int, tag: int) -> list[grpc.aio.Channel]:
    # A distinct argument per channel: otherwise gRPC shares one connection among them.
    return [
        grpc.aio.insecure_channel(target, options=[("bench.channel", tag * 1000 + i)])
        for i in range(max(1, n))
    ]


async def _at(instant: float) -> None:
    await asyncio.sleep(max(0.0, instant - time.monotonic()))


# Client processes.


def watch_client(target: str, workspaces: list[str], conn: Connection) -> None:
    """Connect, say "ready", hear the burst's instant; open one WatchBalance per entry of
    `workspaces` at that instant; report each first
    message's delay; then, on "changes", every balance message since (workspace, available,
    time); on "stop", end."""
    asyncio.run(_watch_client(target, workspaces, conn))


async def _ready(chans: list[grpc.aio.Channel], conn: Connection) -> float:
    """Connect every channel, say so, and hear the agreed instant."""
    await asyncio.gather(*(c.channel_ready() for c in chans))
    conn.send("ready")
    start_at: float = await asyncio.get_running_loop().run_in_executor(None, conn.recv)
    return start_at


async def _watch_client(target: str, workspaces: list[str], conn: Connection) -> None:
    chans = _channels(target, -(-len(workspaces) // STREAMS_PER_CHANNEL), os.getpid())
    start_at = await _ready(chans, conn)
    stubs = [meter_pb2_grpc.MeterStub(c) for c in chans]
    firsts: list[float] = []
    failures: collections.Counter[str] = collections.Counter()
    seen: list[tuple[str, int, float]] = []
    opened = 0
    all_open = asyncio.Event()

    async def one(i: int, ws: str) -> None:
        nonlocal opened
        call = stubs[i % len(stubs)].WatchBalance(pb.WatchBalanceRequest(workspace_id=ws))
        first = True
        try:
            async for msg in call:
                now = time.monotonic()
                if first:
                    firsts.append(now - start_at)
                    first = False
                    opened += 1
                    if opened + sum(failures.values()) == len(workspaces):
                        all_open.set()
                elif msg.HasField("balance"):
                    seen.append((ws, msg.balance.available, now))
        except grpc.aio.AioRpcError as e:
            if e.code() != grpc.StatusCode.CANCELLED:
                failures[e.code().name] += 1
                if first and opened + sum(failures.values()) == len(workspaces):
                    all_open.set()

    await _at(start_at)
    tasks = [asyncio.create_task(one(i, w)) for i, w in enumerate(workspaces)]
    try:
        await asyncio.wait_for(all_open.wait(), CALL_TIMEOUT_S)
    except TimeoutError:
        failures["NO_FIRST_MESSAGE"] += len(workspaces) - opened - sum(failures.values())
    loop = asyncio.get_running_loop()
    conn.send(("opened", firsts, dict(failures)))
    while True:
        cmd = await loop.run_in_executor(None, conn.recv)
        if cmd == "changes":
            conn.send(("changes", seen, dict(failures)))
            seen = []
        else:
            break
    for t in tasks:
        t.cancel()
    await asyncio.gather(*tasks, return_exceptions=True)
    for c in chans:
        await c.close()
    conn.send(("stopped",))


def stream_client(target: str, calls: int, tag: int, conn: Connection) -> None:
    """Connect, say "ready", hear the burst's instant; then open `calls` Streams at once,
    each carrying one Charge; report each call's time to its result and every failure."""
    conn.send(asyncio.run(_stream_client(target, calls, tag, conn)))


async def _stream_client(
    target: str, calls: int, tag: int, conn: Connection
) -> tuple[list[float], dict[str, int]]:
    chans = _channels(target, -(-calls // STREAMS_PER_CHANNEL), os.getpid())
    start_at = await _ready(chans, conn)
    stubs = [meter_pb2_grpc.MeterStub(c) for c in chans]
    times: list[float] = []
    failures: collections.Counter[str] = collections.Counter()

    async def one(i: int) -> None:
        ws = f"edge-s{(tag * calls + i) % 1000}"
        item = pb.StreamItem(
            charge=pb.ChargeRequest(
                workspace_id=ws, request_id=f"s{tag}-{i}-{start_at}", amount=1, operation=OPERATION
            )
        )

        async def requests() -> Any:
            yield pb.StreamRequest(items=[item])

        try:
            call = stubs[i % len(stubs)].Stream(requests(), timeout=CALL_TIMEOUT_S)
            async for msg in call:
                for r in msg.results:
                    if r.status.code:
                        failures[f"item:{grpc.StatusCode(r.status.code)}"] += 1  # rare
                    else:
                        times.append(time.monotonic() - start_at)
        except grpc.aio.AioRpcError as e:
            failures[e.code().name] += 1

    await _at(start_at)
    await asyncio.gather(*(one(i) for i in range(calls)))
    for c in chans:
        await c.close()
    return times, dict(failures)


# Measuring the server.


def _proc_kb(pid: int, field: str) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    return 0


def rss_mb(pid: int) -> float:
    return _proc_kb(pid, "VmRSS") / 1024


def fds(pid: int) -> int:
    return len(os.listdir(f"/proc/{pid}/fd"))


class Connections:
    """Counts the server's sessions on its database, over one connection opened at the start
    (the shared PostgreSQL may have no slot free for a new one later)."""

    def __init__(self, url: str) -> None:
        self.engine = sa.create_engine(normalize_url(url), pool_size=1)
        self.conn = self.engine.connect()

    def count(self) -> int | str:
        try:
            n = self.conn.execute(
                sa.text(
                    "SELECT count(*) FROM pg_stat_activity"
                    " WHERE datname = current_database() AND pid <> pg_backend_pid()"
                )
            ).scalar_one()
            self.conn.rollback()
        except sa.exc.SQLAlchemyError as e:
            return f"? ({type(e).__name__})"
        return int(n)

    def close(self) -> None:
        self.conn.close()
        self.engine.dispose()


def load_avg() -> str:
    return Path("/proc/loadavg").read_text().split(" ", 3)[:3].__str__()


def _spawn(target: Any, *args: Any) -> tuple[Any, Connection]:
    ctx = mp.get_context("spawn")
    parent, child = ctx.Pipe()
    proc = ctx.Process(target=target, args=(*args, child), daemon=True)
    proc.start()
    return proc, parent


def _start(clients: Sequence[tuple[Any, Connection]], lead_s: float = 0.5) -> float:
    """Wait until every client is connected, then tell them all one instant to start at."""
    for _, c in clients:
        assert c.recv() == "ready"
    start_at = time.monotonic() + lead_s
    for _, c in clients:
        c.send(start_at)
    return start_at


def _split(items: Sequence[str], n: int) -> list[list[str]]:
    return [list(items[i::n]) for i in range(n)]


def _merge(failures: Sequence[dict[str, int]]) -> dict[str, int]:
    total: collections.Counter[str] = collections.Counter()
    for f in failures:
        total.update(f)
    return dict(total)


def _ms(values: Sequence[float], p: float) -> str:
    v = percentile_ms(values, p)
    return "-" if v is None else f"{v:.0f} ms"


# The edges.


async def opens(servers: Sequence[server.Server], n: int) -> None:
    """`n` WatchBalance opens at one instant, one per workspace, the client processes spread
    over `servers` (replicas on one database, as behind a load balancer)."""
    workspaces = [f"edge-o{i}" for i in range(n)]
    clients = [
        _spawn(watch_client, servers[k % len(servers)].target, part)
        for k, part in enumerate(_split(workspaces, PROCESSES))
    ]
    _start(clients)
    cpu0 = sum(srv.cpu_s() for srv in servers)
    reports = [c.recv() for _, c in clients]
    cpu = sum(srv.cpu_s() for srv in servers) - cpu0
    firsts = [t for r in reports for t in r[1]]
    failures = _merge([r[2] for r in reports])
    for proc, c in clients:
        c.send("stop")
        c.recv()
        proc.join(10)
    print(
        f"opens: {n} at once on {len(servers)} server process(es): {len(firsts)} got their"
        f" first message, failures {failures or 'none'}; first message p50 {_ms(firsts, 0.5)},"
        f" p99 {_ms(firsts, 0.99)}, max {_ms(firsts, 1)}; server CPU {cpu:.2f} s;"
        f" load {load_avg()}",
        flush=True,
    )


async def watchers(srv: server.Server, hot_watchers: int, total: int, changes: int) -> None:
    """`total` watchers over 1,000 workspaces, `hot_watchers` of them on one; then grants to
    the hot one, each timed until every one of its watchers has heard it."""
    others = [f"edge-w{i % 999 + 1}" for i in range(total - hot_watchers)]
    hot = "edge-w0"
    workspaces = [hot] * hot_watchers + others
    random.Random(7).shuffle(workspaces)
    rss0 = rss_mb(srv.pid)
    clients = [_spawn(watch_client, srv.target, part) for part in _split(workspaces, PROCESSES)]
    _start(clients)
    reports = [c.recv() for _, c in clients]
    failures = _merge([r[2] for r in reports])
    opened = sum(len(r[1]) for r in reports)
    await asyncio.sleep(2)
    rss1 = rss_mb(srv.pid)
    delays: list[float] = []
    missing = 0
    idle0 = srv.cpu_s()
    await asyncio.sleep(1.5 * changes)
    idle_s = srv.cpu_s() - idle0  # what the server spends meanwhile with no change at all
    cpu0 = srv.cpu_s()
    async with grpc.aio.insecure_channel(srv.target) as ch:
        stub = meter_pb2_grpc.MeterStub(ch)
        for k in range(changes):
            t0 = time.monotonic()
            r = await stub.GrantCredits(
                pb.GrantCreditsRequest(
                    workspace_id=hot, request_id=f"change-{k}-{t0}", amount=7, source="bench"
                ),
                timeout=CALL_TIMEOUT_S,
            )
            want = r.balance.available if r.HasField("balance") else None
            await asyncio.sleep(1.5)
            got = 0
            for _, c in clients:
                c.send("changes")
                _, seen, _ = c.recv()
                mine = [t for ws, avail, t in seen if ws == hot and (want is None or avail == want)]
                got += len(mine)
                delays.extend(t - t0 for t in mine)
            missing += hot_watchers - got
    cpu_us = (srv.cpu_s() - cpu0 - idle_s) * 1e6 / max(1, len(delays))
    rss2 = rss_mb(srv.pid)
    peak = _proc_kb(srv.pid, "VmHWM") / 1024
    for proc, c in clients:
        c.send("stop")
        c.recv()
        proc.join(10)
    print(
        f"watchers: {opened} of {total} open over 1,000 workspaces, failures {failures or 'none'};"
        f" server RSS {rss0:.0f} MB before, {rss1:.0f} MB with them, {rss2:.0f} MB after"
        f" {changes} changes (peak {peak:.0f} MB); one change to {hot_watchers} watchers of one"
        f" workspace: p50 {_ms(delays, 0.5)}, p99 {_ms(delays, 0.99)}, max {_ms(delays, 1)}"
        f" ({len(delays)} deliveries, {missing} missing; server CPU {cpu_us:.0f} µs a"
        f" delivery beyond its idle {idle_s / (1.5 * changes) * 100:.0f}% of a core);"
        f" load {load_avg()}",
        flush=True,
    )


async def streams(srv: server.Server, n: int, round_no: int) -> None:
    """`n` Stream calls at one instant, each one Charge."""
    per = n // PROCESSES
    clients = [
        _spawn(stream_client, srv.target, per, round_no * PROCESSES + i) for i in range(PROCESSES)
    ]
    _start(clients)
    reports = [c.recv() for _, c in clients]
    for proc, _ in clients:
        proc.join(10)
    times = [t for r in reports for t in r[0]]
    failures = _merge([r[1] for r in reports])
    print(
        f"streams: {per * PROCESSES} at once, 1 Charge each: {len(times)} answered, failures"
        f" {failures or 'none'}; p50 {_ms(times, 0.5)}, p99 {_ms(times, 0.99)}, max"
        f" {_ms(times, 1)}; load {load_avg()}",
        flush=True,
    )


async def soak(srv: server.Server, url: str, minutes: float, window_s: float) -> None:
    """Mixed load for `minutes`: Stream jobs, unary jobs (some left to expire for the
    sweeper), watchers, history and usage reads, grants; per window the server's RSS, open
    files, database connections and the unary Reserve p99."""
    from meter.ledger.model import BalanceView  # noqa: F401  (the server's own code, warm)

    workspaces = [f"edge-k{i}" for i in range(200)]
    sessions = Connections(url)
    await server.fund(srv.target, workspaces)
    watch_proc, watch_conn = _spawn(watch_client, srv.target, workspaces * 2)
    _start([(watch_proc, watch_conn)])
    watch_conn.recv()
    stop = time.monotonic() + minutes * 60
    lat: list[float] = []
    reads: list[float] = []
    errors: collections.Counter[str] = collections.Counter()
    ch = grpc.aio.insecure_channel(srv.target)
    stub = meter_pb2_grpc.MeterStub(ch)
    seq = iter(range(10**12))

    async def unary_jobs(n: int) -> None:
        rnd = random.Random(n)
        while time.monotonic() < stop:
            ws, rid = rnd.choice(workspaces), f"k{n}-{next(seq)}"
            t0 = time.monotonic()
            try:
                await stub.Reserve(
                    pb.ReserveRequest(
                        workspace_id=ws,
                        request_id=rid,
                        amount=3,
                        operation=OPERATION,
                        ttl={"seconds": 2},
                    ),
                    timeout=CALL_TIMEOUT_S,
                )
                lat.append(time.monotonic() - t0)
                if rnd.random() < 0.9:  # the rest expire: work for the sweeper
                    await stub.Commit(
                        pb.CommitRequest(workspace_id=ws, request_id=rid, amount=2),
                        timeout=CALL_TIMEOUT_S,
                    )
            except grpc.aio.AioRpcError as e:
                errors[e.code().name] += 1
            await asyncio.sleep(0.01)

    async def stream_jobs() -> None:
        rnd = random.Random(99)
        while time.monotonic() < stop:
            queue: asyncio.Queue[pb.StreamRequest | None] = asyncio.Queue()

            async def requests(q: asyncio.Queue[pb.StreamRequest | None]) -> Any:
                while (m := await q.get()) is not None:
                    yield m

            call = stub.Stream(requests(queue))
            try:
                for _ in range(200):
                    if time.monotonic() >= stop:
                        break
                    items = [
                        pb.StreamItem(
                            charge=pb.ChargeRequest(
                                workspace_id=rnd.choice(workspaces),
                                request_id=f"ks{next(seq)}",
                                amount=1,
                                operation=OPERATION,
                            )
                        )
                        for _ in range(50)
                    ]
                    queue.put_nowait(pb.StreamRequest(items=items))
                    got = 0
                    while got < 50:
                        got += len((await call.read()).results)
                    await asyncio.sleep(0.05)
                queue.put_nowait(None)
                while await call.read() is not grpc.aio.EOF:
                    pass
            except grpc.aio.AioRpcError as e:
                errors[e.code().name] += 1

    async def readers() -> None:
        rnd = random.Random(5)
        while time.monotonic() < stop:
            ws = rnd.choice(workspaces)
            t0 = time.monotonic()
            try:
                await stub.ListTransactions(
                    pb.ListTransactionsRequest(workspace_id=ws, page_size=50),
                    timeout=CALL_TIMEOUT_S,
                )
                await stub.GetUsage(
                    pb.GetUsageRequest(workspace_id=ws, group_by=pb.USAGE_GROUPING_OPERATION),
                    timeout=CALL_TIMEOUT_S,
                )
                await stub.GetBalance(pb.GetBalanceRequest(workspace_id=ws), timeout=CALL_TIMEOUT_S)
                reads.append(time.monotonic() - t0)
            except grpc.aio.AioRpcError as e:
                errors[e.code().name] += 1
            await asyncio.sleep(0.02)

    async def grants() -> None:
        rnd = random.Random(6)
        while time.monotonic() < stop:
            try:
                await stub.GrantCredits(
                    pb.GrantCreditsRequest(
                        workspace_id=rnd.choice(workspaces),
                        request_id=f"kg{next(seq)}",
                        amount=50,
                        source="bench",
                    ),
                    timeout=CALL_TIMEOUT_S,
                )
            except grpc.aio.AioRpcError as e:
                errors[e.code().name] += 1
            await asyncio.sleep(1.0)

    async def sample() -> None:
        t_start = time.monotonic()
        k = 0
        while time.monotonic() < stop:
            await asyncio.sleep(min(window_s, max(0.1, stop - time.monotonic())))
            k += 1
            got = lat[:]
            lat.clear()
            rd = reads[:]
            reads.clear()
            conns = await asyncio.to_thread(sessions.count)
            print(
                f"soak {time.monotonic() - t_start:6.0f} s: RSS {rss_mb(srv.pid):.0f} MB,"
                f" {fds(srv.pid)} fds, {conns} connections; Reserve p50 {_ms(got, 0.5)}, p99"
                f" {_ms(got, 0.99)} ({len(got)}); reads p99 {_ms(rd, 0.99)}; errors"
                f" {dict(errors) or 'none'}; load {load_avg()}",
                flush=True,
            )

    await asyncio.gather(
        *(unary_jobs(i) for i in range(4)), stream_jobs(), readers(), grants(), sample()
    )
    await ch.close()
    sessions.close()
    watch_conn.send("changes")
    _, _, failures = watch_conn.recv()
    watch_conn.send("stop")
    watch_conn.recv()
    watch_proc.join(10)
    print(f"soak: watchers' failures {failures or 'none'}", flush=True)


async def main(args: argparse.Namespace) -> None:
    global PROCESSES
    PROCESSES = args.processes
    only = set(args.only.split(","))
    url = db.fresh_database(args.database_url)
    srv = server.Server(url)
    replicas: list[server.Server] = []
    try:
        await srv.ready()
        print(f"server pid {srv.pid}; load {load_avg()}", flush=True)
        if "opens" in only:
            await server.fund(srv.target, [f"edge-o{i}" for i in range(args.opens)])
            replicas = [server.Server(url) for _ in range(args.servers - 1)]
            for replica in replicas:
                await replica.ready()
            for _ in range(args.repeat):
                await opens([srv, *replicas], args.opens)
            for replica in replicas:
                replica.stop()
        if "streams" in only:
            await server.fund(srv.target, [f"edge-s{i}" for i in range(1000)])
            for k in range(args.repeat):
                await streams(srv, args.streams, k)
        if "watchers" in only:
            await server.fund(srv.target, [f"edge-w{i}" for i in range(1000)])
            await watchers(srv, 1000, args.watchers, args.changes)
        if "soak" in only:
            await soak(srv, url, args.minutes, args.window)
    finally:
        for replica in replicas:
            replica.stop()
        srv.stop()
        db.drop_database(args.database_url, url)


def parse() -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m bench.edges", description=__doc__)
    db.add_database_url(p)
    p.add_argument("--only", default="opens,streams,watchers")
    p.add_argument("--repeat", type=int, default=3)
    p.add_argument("--processes", type=int, default=PROCESSES, help="client processes")
    p.add_argument("--opens", type=int, default=1000)
    p.add_argument(
        "--servers", type=int, default=1, help="server processes the opens are spread over"
    )
    p.add_argument("--streams", type=int, default=1000)
    p.add_argument("--watchers", type=int, default=10000)
    p.add_argument("--changes", type=int, default=5)
    p.add_argument("--minutes", type=float, default=30.0)
    p.add_argument("--window", type=float, default=300.0, help="soak sample window, seconds")
    return p.parse_args()


if __name__ == "__main__":
    asyncio.run(main(parse()))
