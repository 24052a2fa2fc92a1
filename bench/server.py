"""`meter serve` in its own process, as production runs it, and the calls that set it up."""

from __future__ import annotations

import asyncio
import os
import re
import socket
import subprocess
import sys
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

    def __init__(self, url: str) -> None:
        self.port = free_port()
        self.target = f"127.0.0.1:{self.port}"
        env = {**os.environ, "METER_LOG_LEVEL": os.environ.get("METER_LOG_LEVEL", "warning")}
        cmd = [sys.executable, "-m", "meter.cli.main", "serve", "--database-url", url]
        self.proc = subprocess.Popen([*cmd, "--listen", self.target], env=env)

    @property
    def pid(self) -> int:
        return self.proc.pid

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
                    if r.status == health_pb2.HealthCheckResponse.SERVING:
                        return
                except grpc.aio.AioRpcError:
                    pass
                await asyncio.sleep(0.1)
        raise RuntimeError("the server did not start")

    def cpu_s(self) -> float:
        return proc_cpu_s(self.pid, children=False) or 0.0

    def peak_rss_mb(self) -> float:
        status = Path(f"/proc/{self.pid}/status").read_text()
        m = re.search(r"VmHWM:\s+(\d+) kB", status)
        return int(m.group(1)) / 1024 if m else 0.0

    def stop(self) -> None:
        if self.proc.poll() is not None:
            return
        self.proc.terminate()
        try:
            self.proc.wait(20)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(5)


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
