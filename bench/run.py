"""`make bench`: Meter's throughput, latency and memory, each beside PostgreSQL's ceiling.

One run, one database: pg-limit measures what PostgreSQL itself can do for a durable
reserve+commit pair, then the Meter server (its own process, loopback gRPC, asyncio
clients) is measured on the same database, and every figure is printed with its ratio.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import re
import socket
import statistics
import subprocess
import sys
import time
import uuid
from pathlib import Path

import grpc
import sqlalchemy as sa
from grpc_health.v1 import health_pb2, health_pb2_grpc

from bench import load
from meter.storage.db import libpq_url, normalize_url
from meterpb.v1 import meter_pb2 as pb
from meterpb.v1 import meter_pb2_grpc

ROOT = Path(__file__).resolve().parents[1]
PG_LIMIT = Path(os.environ.get("METER_PG_LIMIT", ROOT.parent / "shared/bench/pg-limit"))
FUNDS = 10**11


def pg_limit(url: str, clients: int, seconds: int, workspaces: int, batch: int = 1) -> int:
    if not PG_LIMIT.is_file():
        raise SystemExit(f"pg-limit not found at {PG_LIMIT}: set METER_PG_LIMIT to its path")
    out = subprocess.run(
        [
            "bash",
            str(PG_LIMIT),
            libpq_url(url),
            str(clients),
            str(seconds),
            str(workspaces),
            str(batch),
        ],
        check=True,
        capture_output=True,
        text=True,
    ).stdout
    m = re.search(r"limit_pairs_per_s (\d+)", out)
    if not m:
        raise RuntimeError(f"pg-limit printed no figure: {out}")
    return int(m.group(1))


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class CpuSplit:
    """Where the machine's CPU went during a phase: the server, this process's clients, and
    everything else (on a bench machine: PostgreSQL), in cores."""

    def __init__(self, server: Server) -> None:
        self.server = server
        self.start = self._read()

    def _read(self) -> tuple[float, float, float, float]:
        ticks = [int(x) for x in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
        hz = os.sysconf("SC_CLK_TCK")
        busy = (sum(ticks) - ticks[3] - ticks[4]) / hz
        me = os.times()
        return time.perf_counter(), busy, self.server.cpu_s(), me.user + me.system

    def cores(self) -> tuple[float, float, float]:
        now = self._read()
        wall = now[0] - self.start[0]
        busy, srv, cli = ((now[i] - self.start[i]) / wall for i in (1, 2, 3))
        return srv, cli, busy - srv - cli


class Server:
    """`meter serve` in its own process."""

    def __init__(self, url: str) -> None:
        self.port = free_port()
        self.target = f"127.0.0.1:{self.port}"
        env = {**os.environ, "METER_LOG_LEVEL": os.environ.get("METER_LOG_LEVEL", "warning")}
        self.proc = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "meter.cli.main",
                "serve",
                "--database-url",
                url,
                "--listen",
                self.target,
            ],
            env=env,
        )

    async def ready(self) -> None:
        async with grpc.aio.insecure_channel(self.target) as ch:
            health = health_pb2_grpc.HealthStub(ch)
            for _ in range(300):
                try:
                    r = await health.Check(health_pb2.HealthCheckRequest(), timeout=1)
                    if r.status == health_pb2.HealthCheckResponse.SERVING:
                        return
                except grpc.aio.AioRpcError:
                    pass
                await asyncio.sleep(0.1)
        raise RuntimeError("the server did not start")

    def cpu_s(self) -> float:
        """CPU seconds the server process has used (user + system)."""
        fields = Path(f"/proc/{self.proc.pid}/stat").read_text().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")

    def peak_rss_mb(self) -> float:
        status = Path(f"/proc/{self.proc.pid}/status").read_text()
        kb = int(re.search(r"VmHWM:\s+(\d+) kB", status).group(1))  # type: ignore[union-attr]
        return kb / 1024

    def stop(self) -> None:
        self.proc.terminate()
        try:
            self.proc.wait(20)
        except subprocess.TimeoutExpired:
            self.proc.kill()


async def fund(target: str, workspaces: list[str]) -> None:
    async with load.channel(target) as ch:
        stub = meter_pb2_grpc.MeterStub(ch)
        sem = asyncio.Semaphore(64)

        async def one(ws: str) -> None:
            async with sem:
                await stub.GrantCredits(
                    pb.GrantCreditsRequest(
                        workspace_id=ws, request_id=f"fund-{ws}", amount=FUNDS, source="bench"
                    )
                )

        await asyncio.gather(*(one(w) for w in workspaces))


def fresh_database(base: str) -> str:
    name = f"meter_bench_{uuid.uuid4().hex[:8]}"
    admin = sa.create_engine(normalize_url(base), isolation_level="AUTOCOMMIT")
    with admin.connect() as c:
        c.execute(sa.text(f'CREATE DATABASE "{name}"'))
    admin.dispose()
    return sa.engine.make_url(normalize_url(base)).set(database=name).render_as_string(False)


def drop_database(base: str, url: str) -> None:
    name = sa.engine.make_url(url).database
    admin = sa.create_engine(normalize_url(base), isolation_level="AUTOCOMMIT")
    with admin.connect() as c:
        c.execute(sa.text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
    admin.dispose()


def grow_journal(url: str, rows: int, workspaces: list[str]) -> None:
    """Append `rows` CHARGE entries of 0 credits across the workspaces, as a busy ledger has."""
    eng = sa.create_engine(normalize_url(url))
    per = rows // len(workspaces)
    with eng.begin() as c:
        c.execute(
            sa.text(
                "INSERT INTO journal (workspace_id, entry_id, kind, amount, balance_after,"
                " operation, request_id, created_at)"
                " SELECT w.workspace_id, w.entry_seq + g, 2, 0, w.balance, 'content.generate_post',"
                "  'old-' || g, now() - make_interval(secs => (:per - g))"
                " FROM workspaces w, generate_series(1, :per) g WHERE w.workspace_id = ANY(:ids)"
            ),
            {"per": per, "ids": workspaces},
        )
        c.execute(
            sa.text(
                "UPDATE workspaces SET entry_seq = entry_seq + :per WHERE workspace_id = ANY(:ids)"
            ),
            {"per": per, "ids": workspaces},
        )
    with eng.connect().execution_options(isolation_level="AUTOCOMMIT") as c:
        c.execute(sa.text("VACUUM ANALYZE journal"))
    eng.dispose()


async def first_page_ms(target: str, workspace: str, n: int = 50) -> float:
    async with load.channel(target) as ch:
        stub = meter_pb2_grpc.MeterStub(ch)
        times = []
        for _ in range(n):
            t0 = time.perf_counter()
            await stub.ListTransactions(
                pb.ListTransactionsRequest(workspace_id=workspace, page_size=50)
            )
            times.append((time.perf_counter() - t0) * 1000)
    return statistics.median(times)


def pct(values: list[float], p: float) -> float:
    values = sorted(values)
    return values[min(len(values) - 1, int(len(values) * p))] * 1000


async def main(args: argparse.Namespace) -> dict[str, float]:
    base = args.database_url
    url = fresh_database(base)
    figures: dict[str, float] = {}
    server = None
    try:
        figures["pg_limit_1000"] = pg_limit(url, 8, args.seconds, 1000)
        figures["pg_limit_1"] = pg_limit(url, 8, args.seconds, 1)
        print(f"pg-limit (8 clients, 1,000 workspaces): {figures['pg_limit_1000']:,} pairs/s")
        print(f"pg-limit (8 clients, 1 workspace):      {figures['pg_limit_1']:,} pairs/s")
        server = Server(url)
        await server.ready()
        many = [f"bench-{i:04d}" for i in range(1000)]
        one = ["bench-solo"]
        await fund(server.target, many + one)

        cpu, split = server.cpu_s(), CpuSplit(server)
        t = await load.unary_pairs(server.target, many, 32, args.seconds)
        figures["unary"] = t.pairs / args.seconds
        figures["unary_cpu_us"] = (server.cpu_s() - cpu) / max(t.pairs, 1) * 1e6
        figures["unary_cores"] = split.cores()
        # Latency at about half the unary peak, measured next to that peak.
        t = await load.reserve_latency(server.target, many, figures["unary"] / 2, args.seconds)
        figures["p50_ms"] = pct(t.latencies, 0.50)
        figures["p99_ms"] = pct(t.latencies, 0.99)
        figures["latency_rate"] = figures["unary"] / 2
        cpu, split = server.cpu_s(), CpuSplit(server)
        t = await load.stream_pairs(server.target, many, args.streams, args.in_flight, args.seconds)
        figures["stream"] = t.pairs / args.seconds
        figures["stream_cpu_us"] = (server.cpu_s() - cpu) / max(t.pairs, 1) * 1e6
        figures["stream_cores"] = split.cores()
        figures["stream_errors"] = t.errors
        t = await load.stream_pairs(server.target, one, args.streams, args.in_flight, args.seconds)
        figures["stream_one"] = t.pairs / args.seconds
        if args.journal_rows:
            grow_journal(url, args.journal_rows, many)
            t = await load.stream_pairs(
                server.target, many, args.streams, args.in_flight, args.seconds
            )
            figures["stream_big"] = t.pairs / args.seconds
            figures["first_page_ms"] = await first_page_ms(server.target, many[0])
        figures["rss_mb"] = server.peak_rss_mb()
    finally:
        if server is not None:
            server.stop()
        drop_database(base, url)
    report(figures, args)
    return figures


def report(f: dict[str, float], args: argparse.Namespace) -> None:
    rows = [
        (
            "Stream pairs/s, 1,000 workspaces",
            f["stream"],
            f["stream"] / f["pg_limit_1000"],
            ">= 3.0",
        ),
        (
            "Stream pairs/s, 1 workspace",
            f["stream_one"],
            f["stream_one"] / f["pg_limit_1"],
            ">= 3.0",
        ),
        ("unary pairs/s (32 workers)", f["unary"], f["unary"] / f["pg_limit_1000"], ">= 0.35"),
    ]
    print()
    print(f"{'figure':<44}{'value':>12}{'ratio':>10}  target")
    for name, value, ratio, target in rows:
        print(f"{name:<44}{value:>12,.0f}{ratio:>10.2f}  {target}")
    print(
        f"{'unary Reserve p50 / p99 at ' + format(f['latency_rate'], ',.0f') + '/s (ms)':<44}"
        f"{f['p50_ms']:>6.2f} / {f['p99_ms']:.2f}{'':>4}  p99 <= 10 ms"
    )
    if "stream_big" in f:
        print(
            f"{'Stream pairs/s with ' + format(args.journal_rows, ',') + ' journal rows':<44}"
            f"{f['stream_big']:>12,.0f}{f['stream_big'] / f['stream']:>10.2f}  >= 0.9 x empty"
        )
        print(
            f"{'ListTransactions first page (ms, median)':<44}{f['first_page_ms']:>12.2f}"
            f"{'':>10}  <= 20 ms"
        )
    print(f"{'server peak RSS (MB)':<44}{f['rss_mb']:>12.0f}{'':>10}  <= 300 MB")
    print(
        f"{'server CPU per pair, unary / Stream (us)':<44}"
        f"{f['unary_cpu_us']:>6.0f} / {f['stream_cpu_us']:.0f}"
    )
    for phase in ("unary", "stream"):
        srv, cli, rest = f[f"{phase}_cores"]
        print(
            f"{'cores used, ' + phase + ' phase':<44}server {srv:.2f}, clients {cli:.2f},"
            f" PostgreSQL and the rest {rest:.2f} (of {os.cpu_count()})"
        )
    if args.json:
        Path(args.json).write_text(json.dumps(f, indent=2))


def parse() -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument(
        "--database-url",
        default=os.environ.get(
            "METER_BENCH_DATABASE_URL", "postgresql://postgres@127.0.0.1:5432/postgres"
        ),
    )
    p.add_argument("--seconds", type=int, default=10)
    p.add_argument("--streams", type=int, default=4)
    p.add_argument("--in-flight", type=int, default=2000)
    p.add_argument("--journal-rows", type=int, default=5_000_000)
    p.add_argument("--json", default="")
    return p.parse_args()


if __name__ == "__main__":
    asyncio.run(main(parse()))
