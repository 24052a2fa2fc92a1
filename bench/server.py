"""`meter serve` in its own process, as production runs it, and the calls that set it up."""

from __future__ import annotations

import asyncio
import os
import re
import socket
import subprocess
import sys
import urllib.request
from pathlib import Path

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc

from bench import load
from bench.cpu import proc_cpu_s
from meterpb.v1 import meter_pb2 as pb
from meterpb.v1 import meter_pb2_grpc

FUNDS = 10**11
READY_TIMEOUT_S = 60.0
FUND_TIMEOUT_S = 30.0


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class Server:
    """One `meter serve` process on a loopback port (it migrates its database at start)."""

    def __init__(self, url: str, workers: int = 1) -> None:
        self.port = free_port()
        self.target = f"127.0.0.1:{self.port}"
        self.workers = workers
        env = {**os.environ, "METER_LOG_LEVEL": os.environ.get("METER_LOG_LEVEL", "warning")}
        cmd = [sys.executable, "-m", "meter.cli.main", "serve", "--database-url", url]
        cmd += ["--listen", self.target, "--workers", str(workers)]
        # With workers, the supervisor's metrics tell when every one of them serves.
        self.metrics = f"127.0.0.1:{free_port()}" if workers > 1 else ""
        if self.metrics:
            cmd += ["--metrics-listen", self.metrics]
        self.proc = subprocess.Popen(cmd, env=env)
        self._pids: tuple[int, ...] = ()

    @property
    def pid(self) -> int:
        return self.proc.pid

    def pids(self) -> tuple[int, ...]:
        """The server's processes: with workers, the supervisor and each worker."""
        if self.workers == 1:
            return (self.pid,)
        if len(self._pids) != self.workers + 1:
            self._pids = (self.pid, *_workers_of(self.pid))
        return self._pids

    async def ready(self) -> None:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + READY_TIMEOUT_S
        async with grpc.aio.insecure_channel(self.target) as ch:
            health = health_pb2_grpc.HealthStub(ch)
            while loop.time() < deadline:
                if self.proc.poll() is not None:
                    raise RuntimeError(f"the server exited with code {self.proc.returncode}")
                try:
                    r = await health.Check(health_pb2.HealthCheckRequest(), timeout=1)
                    if r.status == health_pb2.HealthCheckResponse.SERVING and (
                        await asyncio.to_thread(self._workers_serving)
                    ):
                        return
                except grpc.aio.AioRpcError:
                    pass
                await asyncio.sleep(0.1)
        raise RuntimeError("the server did not start")

    def _workers_serving(self) -> bool:
        """Whether every worker has started (the supervisor's /metrics lists each)."""
        if not self.metrics:
            return True
        try:
            with urllib.request.urlopen(f"http://{self.metrics}/metrics", timeout=2) as r:
                text = r.read().decode()
        except OSError:
            return False
        listed = set(re.findall(r'worker="(\d+)"', text))
        return len(listed) == self.workers

    def cpu_s(self) -> float:
        return sum(proc_cpu_s(p, children=False) or 0.0 for p in self.pids())

    def peak_rss_mb(self) -> float:
        """The peak resident memory of the largest of its processes."""
        peaks = []
        for pid in self.pids():
            status = Path(f"/proc/{pid}/status").read_text()
            m = re.search(r"VmHWM:\s+(\d+) kB", status)
            peaks.append(int(m.group(1)) / 1024 if m else 0.0)
        return max(peaks)

    def stop(self) -> None:
        if self.proc.poll() is not None:
            return
        self.proc.terminate()
        try:
            self.proc.wait(20)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(5)


def _workers_of(pid: int) -> list[int]:
    """The worker processes of a `meter serve --workers N` supervisor."""
    found = []
    for task in Path(f"/proc/{pid}/task").iterdir():
        for child in (task / "children").read_text().split():
            try:
                if b"spawn_main" in Path(f"/proc/{child}/cmdline").read_bytes():
                    found.append(int(child))
            except FileNotFoundError:
                continue
    return sorted(found)


async def fund(target: str, workspaces: list[str]) -> None:
    """Grant every workspace more credits than any run can spend."""
    async with load.channel(target) as ch:
        stub = meter_pb2_grpc.MeterStub(ch)
        sem = asyncio.Semaphore(64)

        async def one(ws: str) -> None:
            async with sem:
                await stub.GrantCredits(
                    pb.GrantCreditsRequest(
                        workspace_id=ws, request_id=f"fund-{ws}", amount=FUNDS, source="bench"
                    ),
                    timeout=FUND_TIMEOUT_S,
                )

        await asyncio.gather(*(one(w) for w in workspaces))


async def set_budgets(target: str, workspaces: list[str], job: load.Job) -> None:
    """Three budgets over `job`'s reserves in every workspace, with limits nothing reaches:
    a monthly member limit on its actor, a daily budget for each project, and a total one
    for its team."""
    project, team = job.labels["project"], job.labels["team"]
    budgets = [
        pb.Budget(
            budget_id=f"member:{job.actor_id}:month",
            scope_key="actor_id",
            scope_value=job.actor_id,
            period=pb.LIMIT_PERIOD_MONTH,
            limit=FUNDS,
        ),
        pb.Budget(
            budget_id="projects", scope_key="project", period=pb.LIMIT_PERIOD_DAY, limit=FUNDS
        ),
        pb.Budget(
            budget_id=f"team-{team}",
            scope_key="team",
            scope_value=team,
            period=pb.LIMIT_PERIOD_TOTAL,
            limit=FUNDS,
        ),
    ]
    assert project, "the job names a project"
    async with load.channel(target) as ch:
        stub = meter_pb2_grpc.MeterStub(ch)
        sem = asyncio.Semaphore(64)

        async def one(ws: str) -> None:
            async with sem:
                for b in budgets:
                    await stub.SetBudget(
                        pb.SetBudgetRequest(workspace_id=ws, budget=b), timeout=FUND_TIMEOUT_S
                    )

        await asyncio.gather(*(one(w) for w in workspaces))
