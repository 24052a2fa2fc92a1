"""`meter serve --workers N`: N server processes on one port (meter.workers).

Real `meter serve` subprocesses on the tests' database: calls spread over the workers, their
answers agree (one ledger), metrics come from every worker through the supervisor's port,
a worker that dies is started again while the others serve, SIGTERM drains them all, and
they go with their supervisor even when it is SIGKILLed.
"""

from __future__ import annotations

import asyncio
import os
import signal
import socket
import sys
import urllib.request
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

from meterpb.v1 import meter_pb2 as pb
from meterpb.v1 import meter_pb2_grpc
from tests.support import eventually, rid

CONNECTIONS = 16


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _children(pid: int) -> set[int]:
    """The worker processes of the supervisor `pid` (its other child, multiprocessing's
    resource tracker, is not one)."""
    found = set()
    for task in Path(f"/proc/{pid}/task").iterdir():
        for child in (task / "children").read_text().split():
            try:
                cmdline = Path(f"/proc/{child}/cmdline").read_bytes()
            except FileNotFoundError:
                continue
            if b"spawn_main" in cmdline and _alive(int(child)):
                found.add(int(child))
    return found


def _alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except FileNotFoundError:
        return False
    return state != "Z"


@dataclass
class Served:
    proc: asyncio.subprocess.Process
    target: str
    metrics: str

    def channel(self) -> grpc.aio.Channel:
        """A channel with a connection of its own (channels to one target share one by
        default): the kernel gives each connection to one worker."""
        return grpc.aio.insecure_channel(
            self.target, options=[("grpc.use_local_subchannel_pool", 1)]
        )

    def scrape(self) -> str:
        with urllib.request.urlopen(f"http://{self.metrics}/metrics", timeout=5) as r:
            return str(r.read().decode())


@asynccontextmanager
async def serve(database_url: str, workers: int) -> AsyncIterator[Served]:
    port, metrics = _free_port(), _free_port()
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "meter.cli.main",
        "serve",
        "--database-url",
        database_url,
        "--listen",
        f"127.0.0.1:{port}",
        "--metrics-listen",
        f"127.0.0.1:{metrics}",
        "--workers",
        str(workers),
        env={**os.environ, "METER_LOG_LEVEL": "warning"},
    )
    s = Served(proc, f"127.0.0.1:{port}", f"127.0.0.1:{metrics}")
    try:
        # Every worker up: the supervisor's metrics list each of them.
        async def all_up() -> bool:
            return await asyncio.to_thread(_workers_listed, s) == workers

        await eventually(all_up, within=60, interval=0.2)
        yield s
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()


def _workers_listed(s: Served) -> int:
    try:
        text = s.scrape()
    except OSError:
        return 0
    return len({line.split('worker="')[1][0] for line in text.splitlines() if 'worker="' in line})


def _calls_by_worker(text: str, method: str) -> dict[str, float]:
    """meter_calls_total of one method, OK, by worker label."""
    out: dict[str, float] = {}
    for line in text.splitlines():
        if line.startswith("meter_calls_total{") and f'method="{method}"' in line:
            worker = line.split('worker="')[1].split('"')[0]
            out[worker] = out.get(worker, 0.0) + float(line.rsplit(" ", 1)[1])
    return out


async def test_calls_spread_over_the_workers_of_one_port_and_agree(database_url):
    async with serve(database_url, 2) as s:
        ws = f"ws-{rid()}"
        channels = [s.channel() for _ in range(CONNECTIONS)]
        try:
            stubs = [meter_pb2_grpc.MeterStub(c) for c in channels]
            await stubs[0].GrantCredits(
                pb.GrantCreditsRequest(workspace_id=ws, request_id=rid(), amount=1000)
            )

            async def job(stub: meter_pb2_grpc.MeterStub, n: int) -> None:
                job_id = rid()
                await stub.Reserve(pb.ReserveRequest(workspace_id=ws, request_id=job_id, amount=5))
                await stub.Commit(pb.CommitRequest(workspace_id=ws, request_id=job_id, amount=n))

            await asyncio.gather(
                *(job(stubs[i % CONNECTIONS], 1 + i % 3) for i in range(4 * CONNECTIONS))
            )
            # One ledger, whichever worker answers: every connection reads the same balance.
            spent = sum(1 + i % 3 for i in range(4 * CONNECTIONS))
            balances = await asyncio.gather(
                *(st.GetBalance(pb.GetBalanceRequest(workspace_id=ws)) for st in stubs)
            )
            assert {1000 - spent} == {b.available for b in balances}
            assert {0} == {b.held for b in balances}
        finally:
            for c in channels:
                await c.close()
        # The kernel gave connections to both workers (all 16 on one: 2 in 65,536).
        by_worker = _calls_by_worker(s.scrape(), "Reserve")
        assert {"0", "1"} == set(by_worker), by_worker
        assert 4 * CONNECTIONS == sum(by_worker.values())


async def test_a_worker_that_dies_is_started_again_while_the_other_serves(database_url):
    async with serve(database_url, 2) as s:
        [victim, *_] = sorted(_children(s.proc.pid))
        os.kill(victim, signal.SIGKILL)
        ws = f"ws-{rid()}"

        async def grant_answered() -> bool:
            async with s.channel() as ch:
                try:
                    await meter_pb2_grpc.MeterStub(ch).GrantCredits(
                        pb.GrantCreditsRequest(workspace_id=ws, request_id="g1", amount=7),
                        timeout=5,
                    )
                except grpc.aio.AioRpcError:
                    return False
            return True

        # The other worker answers meanwhile (a connection that met the dead one retries).
        assert await eventually(grant_answered, within=20)

        # A new worker takes the dead one's place.
        async def replaced() -> bool:
            new = _children(s.proc.pid) - {victim}
            return len(new) == 2 and await asyncio.to_thread(_workers_listed, s) == 2

        await eventually(replaced, within=60, interval=0.2)
        assert not _alive(victim)


async def test_sigterm_drains_every_worker_and_exits_cleanly(database_url):
    async with serve(database_url, 2) as s:
        workers = _children(s.proc.pid)
        assert 2 == len(workers)
        async with s.channel() as ch:
            answer = await health_pb2_grpc.HealthStub(ch).Check(health_pb2.HealthCheckRequest())
            assert health_pb2.HealthCheckResponse.SERVING == answer.status
        s.proc.send_signal(signal.SIGTERM)
        assert 0 == await asyncio.wait_for(s.proc.wait(), 30)
        assert not any(_alive(w) for w in workers)


async def test_workers_go_with_a_sigkilled_supervisor(database_url):
    async with serve(database_url, 2) as s:
        workers = _children(s.proc.pid)
        assert 2 == len(workers)
        s.proc.kill()
        await s.proc.wait()

        async def gone() -> bool:
            return not any(_alive(w) for w in workers)

        await eventually(gone, within=10)


@pytest.mark.parametrize("workers", ["0", "two"])
async def test_a_bad_worker_count_is_refused_before_anything_starts(database_url, workers):
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "meter.cli.main",
        "serve",
        "--database-url",
        database_url,
        "--listen",
        f"127.0.0.1:{_free_port()}",
        "--workers",
        workers,
        stderr=asyncio.subprocess.PIPE,
    )
    _, err = await asyncio.wait_for(proc.communicate(), 30)
    assert 2 == proc.returncode
    assert "--workers" in err.decode()
