"""A pg_auto_failover cluster of the tier's own: a monitor, a primary and a synchronous
secondary, built from Debian's packages under a temporary directory on free ports.

Nothing here touches a server it did not start: each `pg_autoctl run` is a process group of
its own (the keeper, its Postgres and every backend), which is what a SIGKILL takes down,
and the tier ends by killing exactly those groups. As root the nodes run as `postgres`
(PostgreSQL refuses root), with HOME and the XDG directories pg_autoctl keeps its state in
pointed into the temporary directory.

The failover timings are lowered so that the tier takes a few minutes (see FAST_MONITOR and
FAST_KEEPER; docs/high-availability.md explains each one and what the defaults give).
"""

from __future__ import annotations

import asyncio
import contextlib
import getpass
import json
import os
import shutil
import signal
import tempfile
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from types import MappingProxyType

import psycopg

from meter.storage.dburl import DatabaseUrl
from tests.faults.servers import free_port

# The monitor's settings (ALTER SYSTEM on the monitor, then a reload): how soon a node that
# stopped answering is declared unhealthy, and how long a lost primary is given to demote
# itself before its secondary is promoted. Defaults: 5000, 5000, 2, 2000, 20000, 30000.
FAST_MONITOR = {
    "pgautofailover.health_check_period": "1000",
    "pgautofailover.health_check_timeout": "1000",
    "pgautofailover.health_check_max_retries": "1",
    "pgautofailover.health_check_retry_delay": "500",
    "pgautofailover.node_considered_unhealthy_timeout": "2000",
    "pgautofailover.primary_demote_timeout": "3000",
}
# Each keeper's: a primary that can reach neither the monitor nor a standby for this long
# demotes itself. It must stay below primary_demote_timeout (default 20 s, against 30 s), or
# a cut-off primary could still be taking writes when its secondary is promoted.
FAST_KEEPER = {"timeout.network_partition_timeout": "2"}
# METER_HA_DEFAULT_TIMINGS=1 keeps pg_auto_failover's own defaults instead (slow: about 30 s
# per failover), to measure what a cluster nobody tuned gives.
DEFAULT_TIMINGS = bool(os.environ.get("METER_HA_DEFAULT_TIMINGS"))


@dataclass(frozen=True, slots=True)
class Packages:
    """Where pg_autoctl and the PostgreSQL its extension was built for live, if they do."""

    pg_autoctl: str | None
    bindir: Path | None

    @classmethod
    def find(cls) -> Packages:
        bindir = None
        for control in sorted(
            Path("/usr/share/postgresql").glob("*/extension/pgautofailover.control")
        ):
            candidate = Path("/usr/lib/postgresql") / control.parts[-3] / "bin"
            if (candidate / "pg_ctl").exists():
                bindir = candidate
        return cls(shutil.which("pg_autoctl"), bindir)

    def missing(self) -> list[str]:
        """What to install, in Debian's names, for the tier to run."""
        out = []
        if self.pg_autoctl is None:
            out.append("pg_autoctl (Debian package pg-auto-failover-cli)")
        if self.bindir is None:
            out.append("the pgautofailover extension (Debian package postgresql-NN-auto-failover)")
        return out


@dataclass
class Node:
    name: str
    port: int
    pgdata: Path
    log: Path
    proc: asyncio.subprocess.Process | None = None
    kills: int = 0
    starts: int = 0

    @property
    def running(self) -> bool:
        return self.proc is not None and self.proc.returncode is None


@dataclass
class Cluster:
    """The monitor and two data nodes; `uri` is what `pg_autoctl show uri` prints."""

    packages: Packages
    logs: Path  # the keepers' logs, and each node's Postgres log, kept after the run
    root: Path = field(init=False)
    monitor: Node = field(init=False)
    nodes: dict[str, Node] = field(default_factory=dict)
    uri: str = ""

    def __post_init__(self) -> None:
        # A short path: each node's Unix socket lives in its data directory's parent.
        self.root = Path(tempfile.mkdtemp(prefix="mha-", dir="/tmp"))
        self.user = "postgres" if os.geteuid() == 0 else getpass.getuser()
        if os.geteuid() == 0:
            shutil.chown(self.root, self.user)
        for d in ("config", "share", "run"):
            (self.root / d).mkdir()
            if os.geteuid() == 0:
                shutil.chown(self.root / d, self.user)
        self.monitor = self._node("monitor")
        for name in ("node1", "node2"):
            self.nodes[name] = self._node(name)

    def _node(self, name: str) -> Node:
        return Node(name, free_port(), self.root / name, self.logs / f"{name}.log")

    @property
    def monitor_url(self) -> str:
        return f"postgres://autoctl_node@127.0.0.1:{self.monitor.port}/pg_auto_failover?sslmode=disable"

    def env(self) -> dict[str, str]:
        """What a client of the cluster needs beside its URI, which names no user: the
        nodes' superuser (libpq's default would be the client's own login, root)."""
        return {"PGUSER": self.user}

    def url_as_user(self, dbname: str = "meter") -> str:
        """The URI with that user in it, for this process's own connections."""
        params = {**DatabaseUrl.parse(self.uri).params, "user": self.user, "dbname": dbname}
        return DatabaseUrl(MappingProxyType(params)).libpq()

    # --- running pg_autoctl -----------------------------------------------------------

    def _argv(self, *args: str) -> list[str]:
        assert self.packages.pg_autoctl is not None
        assert self.packages.bindir is not None
        env = [
            f"HOME={self.root}",
            f"XDG_CONFIG_HOME={self.root / 'config'}",
            f"XDG_DATA_HOME={self.root / 'share'}",
            f"XDG_RUNTIME_DIR={self.root / 'run'}",
            f"PATH={self.packages.bindir}:{os.environ.get('PATH', '/usr/bin:/bin')}",
            f"PG_CONFIG={self.packages.bindir / 'pg_config'}",
            f"PGUSER={self.user}",
            # initdb takes the encoding from the locale: UTF8, not SQL_ASCII (whose text
            # psycopg hands back as bytes).
            "LANG=C.UTF-8",
            "LC_ALL=C.UTF-8",
        ]
        cmd = ["env", "-i", *env, self.packages.pg_autoctl, *args]
        return ["runuser", "-u", self.user, "--", *cmd] if os.geteuid() == 0 else cmd

    async def autoctl(self, *args: str, within: float = 120.0) -> str:
        """Run one pg_autoctl command to its end; its stdout, or RuntimeError with its stderr."""
        proc = await asyncio.create_subprocess_exec(
            *self._argv(*args), stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE
        )
        try:
            out, err = await asyncio.wait_for(proc.communicate(), within)
        except TimeoutError:
            proc.kill()
            await proc.wait()
            raise RuntimeError(f"pg_autoctl {' '.join(args)}: no answer in {within} s") from None
        if proc.returncode != 0:
            raise RuntimeError(f"pg_autoctl {' '.join(args)} failed: {err.decode()[-2000:]}")
        return out.decode()

    async def run(self, node: Node) -> None:
        """Start `pg_autoctl run` for a node: the keeper, which starts its Postgres."""
        assert not node.running
        node.proc = await asyncio.create_subprocess_exec(
            *self._argv("run", "--pgdata", str(node.pgdata)),
            stdout=asyncio.subprocess.DEVNULL,
            stderr=node.log.open("ab"),
            # A process group of its own: one killpg takes the keeper, Postgres and backends.
            start_new_session=True,
        )
        node.starts += 1

    async def kill(self, node: Node) -> None:
        """SIGKILL of the node's keeper and Postgres at once: a machine that died."""
        assert node.proc is not None
        assert node.running
        with contextlib.suppress(ProcessLookupError):
            os.killpg(node.proc.pid, signal.SIGKILL)
        await node.proc.wait()
        node.kills += 1

    # --- building it ------------------------------------------------------------------

    async def build(self) -> str:
        """Create and start the monitor and both nodes; return the formation's URI."""
        m = self.monitor
        bindir = self.packages.bindir
        assert bindir is not None
        common = ["--hostname", "127.0.0.1", "--auth", "trust", "--no-ssl", "--pgctl",
                  str(bindir / "pg_ctl")]  # fmt: skip
        await self.autoctl(
            "create", "monitor", "--pgdata", str(m.pgdata), "--pgport", str(m.port), *common
        )
        await self.autoctl(
            "config", "set", "--pgdata", str(m.pgdata), "postgresql.listen_addresses", "127.0.0.1"
        )
        await self.run(m)
        await self._until(self._monitor_answers, 60, "the monitor to start")
        async with await psycopg.AsyncConnection.connect(
            f"host=127.0.0.1 port={m.port} dbname=pg_auto_failover user={self.user}",
            autocommit=True,
        ) as conn:
            for name, value in ({} if DEFAULT_TIMINGS else FAST_MONITOR).items():
                await conn.execute(f"ALTER SYSTEM SET {name} = {value}")
            await conn.execute("SELECT pg_reload_conf()")
        for i, node in enumerate(self.nodes.values()):
            await self.autoctl(
                "create", "postgres", "--pgdata", str(node.pgdata), "--pgport", str(node.port),
                "--listen", "127.0.0.1", "--name", node.name, "--dbname", "meter",
                "--monitor", self.monitor_url, *common,
            )  # fmt: skip
            for key, value in ({} if DEFAULT_TIMINGS else FAST_KEEPER).items():
                await self.autoctl("config", "set", "--pgdata", str(node.pgdata), key, value)
            await self.run(node)
            if i == 0:
                await self._until(lambda: self._states_are({"single"}), 60, "node1 to start")
        await self.settled()
        self.uri = (
            await self.autoctl("show", "uri", "--pgdata", str(m.pgdata), "--formation", "default")
        ).strip()
        DatabaseUrl.parse(self.uri)  # what Meter will be given must be a URL it reads
        return self.uri

    async def close(self) -> None:
        """Kill every process group this cluster started, then remove its directory."""
        for node in [*self.nodes.values(), self.monitor]:
            if node.proc is not None and node.running:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(node.proc.pid, signal.SIGKILL)
                await node.proc.wait()
        for node in [*self.nodes.values(), self.monitor]:
            for log in (node.pgdata / "log").glob("*"):
                with contextlib.suppress(OSError):
                    shutil.copy(log, self.logs / f"{node.name}-postgres-{log.name}")
        shutil.rmtree(self.root, ignore_errors=True)

    # --- what the monitor says --------------------------------------------------------

    async def state(self) -> dict[str, tuple[str, str]]:
        """Each node's (reported, assigned) state, as the monitor has them."""
        out = await self.autoctl("show", "state", "--pgdata", str(self.monitor.pgdata), "--json")
        return {
            n["nodename"]: (n["current_group_state"], n["assigned_group_state"])
            for n in json.loads(out)
        }

    async def _states_are(self, wanted: set[str]) -> bool:
        try:
            states = await self.state()
        except (RuntimeError, json.JSONDecodeError):
            return False
        return bool(states) and all(r == a and r in wanted for r, a in states.values())

    async def _monitor_answers(self) -> bool:
        try:
            await self.state()
        except (RuntimeError, json.JSONDecodeError):
            return False
        return True

    async def settled(self, within: float = 90.0) -> None:
        """Wait for one primary and one secondary, each where the monitor wants it."""

        async def both() -> bool:
            try:
                states = await self.state()
            except (RuntimeError, json.JSONDecodeError):
                return False
            got = sorted(r for r, a in states.values() if r == a)
            return got == ["primary", "secondary"]

        await self._until(both, within, "a primary and a synchronous secondary")

    async def steady(self, seconds: float = 3.0, within: float = 90.0) -> None:
        """Wait for a primary and a secondary that have not changed for `seconds`."""
        await self.settled(within)
        deadline = time.monotonic() + within
        seen, since = await self.state(), time.monotonic()
        while time.monotonic() - since < seconds:
            if time.monotonic() > deadline:
                raise AssertionError(f"the cluster never held still for {seconds} s: {seen}")
            await asyncio.sleep(0.2)
            now = await self.state()
            if now != seen:
                seen, since = now, time.monotonic()
        await self.settled(within)

    async def primary(self) -> Node:
        for name, (reported, assigned) in (await self.state()).items():
            if reported == assigned == "primary":
                return self.nodes[name]
        raise AssertionError(f"no primary: {await self.state()}")

    async def secondary(self) -> Node:
        for name, (reported, assigned) in (await self.state()).items():
            if reported == assigned == "secondary":
                return self.nodes[name]
        raise AssertionError(f"no secondary: {await self.state()}")

    async def switchover(self) -> None:
        await self.autoctl("perform", "switchover", "--pgdata", str(self.monitor.pgdata))

    async def _until(
        self, condition: Callable[[], Awaitable[bool]], within: float, what: str
    ) -> None:
        deadline = time.monotonic() + within
        while not await condition():
            if time.monotonic() > deadline:
                state = await self.state() if what != "the monitor to start" else {}
                raise AssertionError(f"waited {within} s for {what}; the monitor says {state}")
            await asyncio.sleep(0.2)


class WriteProbe:
    """When the cluster takes writes: one small durable write after another through the
    formation's URI, each committed as Meter's are (synchronous_commit on). A commit that
    waits for a missing standby waits here too, so the first commit after a fault is the
    moment the failover manager has made the cluster writable again."""

    def __init__(self, url: str) -> None:
        self.url = url
        self.conninfo = DatabaseUrl.parse(url).with_database("probe").libpq()
        self.commits: list[float] = []
        self._task: asyncio.Task[None] | None = None

    async def create(self) -> None:
        async with await psycopg.AsyncConnection.connect(self.url, autocommit=True) as c:
            await c.execute("CREATE DATABASE probe")
        async with await psycopg.AsyncConnection.connect(self.conninfo, autocommit=True) as c:
            await c.execute("CREATE TABLE beats (at timestamptz NOT NULL DEFAULT now())")

    def start(self) -> None:
        self.commits.clear()
        self._task = asyncio.create_task(self._run(), name="write-probe")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)

    async def _run(self) -> None:
        conn: psycopg.AsyncConnection[object] | None = None
        while True:
            try:
                if conn is None or conn.closed:
                    conn = await psycopg.AsyncConnection.connect(
                        self.conninfo, autocommit=True, connect_timeout=2
                    )
                await conn.execute("INSERT INTO beats DEFAULT VALUES")
                self.commits.append(time.monotonic())
            except psycopg.Error:
                if conn is not None:
                    with contextlib.suppress(Exception):
                        await conn.close()
                conn = None
            await asyncio.sleep(0.02)
