"""A Citus cluster of the tier's own: a coordinator and two workers, on free ports under a
temporary directory, from the PostgreSQL the citus extension was installed into.

Nothing here touches a server it did not start: each node's `postgres` is a process group of
its own (with every backend it forks), which is what the tier stops and kills, by the ids it
recorded; a manual cluster elsewhere on the machine is never looked at. As root the nodes
run as `postgres` (PostgreSQL refuses root). Each node's log is kept in the tier's log
directory after the run.

Citus's metadata lives in each database: `database()` makes one on every node with the
extension and the workers added, as `meter migrate` expects to find it.
"""

from __future__ import annotations

import asyncio
import contextlib
import getpass
import os
import shutil
import signal
import tempfile
import time
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import psycopg

from tests.faults.servers import free_port

# Every node's settings beyond initdb's: what Citus needs (its library preloaded, logical
# decoding for shard moves, prepared transactions for the two-phase commits it does make),
# and citus.recover_2pc_interval=-1 so that pg_dist_transaction keeps a record of every
# two-phase commit: the tier asserts the ledger made none.
SETTINGS = {
    "listen_addresses": "'127.0.0.1'",
    "shared_preload_libraries": "'citus'",
    "wal_level": "logical",
    "max_prepared_transactions": "100",
    "max_connections": "400",
    "max_wal_senders": "20",
    "max_replication_slots": "20",
    "citus.node_conninfo": "'sslmode=disable'",
    "citus.recover_2pc_interval": "-1",
    # A stopped worker must not hang the coordinator's own connections to it for long.
    "citus.node_connection_timeout": "3000",
    # Nothing here outlives the machine: fsync is not needed. Commits still reach the OS
    # before they are acknowledged (synchronous_commit stays on), so a worker stopped with
    # `-m immediate` loses none.
    "fsync": "off",
    "logging_collector": "off",
    "log_min_messages": "warning",
    "log_line_prefix": "'%m [%p] %d '",
}
# More settings for every node, "name=value;name=value": for a look inside, such as
# "citus.multi_task_query_log_level=warning;log_min_error_statement=warning", which logs
# every statement that Citus runs on more than one shard (in the tier's node logs).
EXTRA_SETTINGS = "METER_CITUS_SETTINGS"
# How many times a shard move is tried before its failure fails the test.
MOVE_ATTEMPTS = 3


@dataclass(frozen=True, slots=True)
class Install:
    """Where the citus extension and the PostgreSQL it was built for live, if they do."""

    bindir: Path | None
    pg_config: str | None
    control: Path | None

    @classmethod
    def find(cls) -> Install:
        bindir = control = None
        for found in sorted(Path("/usr/share/postgresql").glob("*/extension/citus.control")):
            candidate = Path("/usr/lib/postgresql") / found.parts[-3] / "bin"
            if (candidate / "pg_ctl").exists() and (candidate / "postgres").exists():
                bindir, control = candidate, found
        return cls(bindir, shutil.which("pg_config"), control)

    def missing(self) -> list[str]:
        """What the tier lacks, in words an operator can act on."""
        out = []
        if self.control is None:
            out.append(
                "the citus extension (/usr/share/postgresql/*/extension/citus.control; not"
                " packaged by Debian or PyPI: citusdata's packages, or built from source)"
            )
        elif self.bindir is None:
            out.append(f"PostgreSQL's server binaries for {self.control}")
        if self.pg_config is None:
            out.append("pg_config (Debian package postgresql-server-dev-NN or libpq-dev)")
        return out

    @property
    def version(self) -> str:
        """The PostgreSQL major version citus was installed into."""
        return self.control.parts[-3] if self.control is not None else ""


@dataclass
class Node:
    name: str
    port: int
    pgdata: Path
    log: Path
    proc: asyncio.subprocess.Process | None = None
    stops: int = 0
    starts: int = 0

    @property
    def running(self) -> bool:
        return self.proc is not None and self.proc.returncode is None


@dataclass
class Cluster:
    """The coordinator and two workers; `url(db)` reaches a database through the coordinator."""

    install: Install
    logs: Path
    root: Path = field(init=False)
    coordinator: Node = field(init=False)
    workers: list[Node] = field(default_factory=list)
    databases: list[str] = field(default_factory=list)

    def __post_init__(self) -> None:
        # A short path: each node's Unix socket lives in it, and socket paths are limited.
        self.root = Path(tempfile.mkdtemp(prefix="mci-", dir="/tmp"))
        self.user = "postgres" if os.geteuid() == 0 else getpass.getuser()
        if os.geteuid() == 0:
            shutil.chown(self.root, self.user)
        self.coordinator = self._node("coordinator")
        self.workers = [self._node("worker1"), self._node("worker2")]

    def _node(self, name: str) -> Node:
        return Node(name, free_port(), self.root / name, self.logs / f"{name}.log")

    @property
    def nodes(self) -> list[Node]:
        return [self.coordinator, *self.workers]

    def worker_on(self, port: int) -> Node:
        return next(n for n in self.workers if n.port == port)

    def url(self, dbname: str) -> str:
        """A database through the coordinator, as Meter is given it."""
        return (
            f"postgresql://{self.user}@127.0.0.1:{self.coordinator.port}/{dbname}?sslmode=disable"
        )

    def conninfo(self, node: Node, dbname: str) -> str:
        return f"host=127.0.0.1 port={node.port} dbname={dbname} user={self.user} sslmode=disable"

    # --- running PostgreSQL --------------------------------------------------------------

    def _argv(self, program: str, *args: str) -> list[str]:
        assert self.install.bindir is not None
        cmd = [str(self.install.bindir / program), *args]
        if os.geteuid() == 0:
            cmd = ["runuser", "-u", self.user, "--", *cmd]
        return ["env", "LANG=C.UTF-8", "LC_ALL=C.UTF-8", *cmd]

    async def _run(self, program: str, *args: str, within: float = 120.0) -> str:
        proc = await asyncio.create_subprocess_exec(
            *self._argv(program, *args),
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
        )
        try:
            out, err = await asyncio.wait_for(proc.communicate(), within)
        except TimeoutError:
            proc.kill()
            await proc.wait()
            raise RuntimeError(f"{program} {' '.join(args)}: no end in {within} s") from None
        if proc.returncode != 0:
            raise RuntimeError(f"{program} {' '.join(args)} failed: {err.decode()[-2000:]}")
        return out.decode()

    async def _initdb(self, node: Node) -> None:
        await self._run("initdb", "-D", str(node.pgdata), "-U", self.user, "--auth=trust")
        extra = dict(
            kv.split("=", 1) for kv in os.environ.get(EXTRA_SETTINGS, "").split(";") if "=" in kv
        )
        settings = {
            **SETTINGS,
            **extra,
            "port": str(node.port),
            "unix_socket_directories": f"'{self.root}'",
        }
        with (node.pgdata / "postgresql.conf").open("a") as conf:
            conf.write("\n# The Citus tier's\n")
            for key, value in settings.items():
                conf.write(f"{key} = {value}\n")

    async def start(self, node: Node, within: float = 60.0) -> None:
        """Start the node's postmaster in a process group of its own; wait until it answers."""
        assert not node.running
        node.proc = await asyncio.create_subprocess_exec(
            *self._argv("postgres", "-D", str(node.pgdata)),
            stdout=asyncio.subprocess.DEVNULL,
            stderr=node.log.open("ab"),
            start_new_session=True,
        )
        node.starts += 1
        await self._until(lambda: self._answers(node), within, f"{node.name} to start")

    async def stop(self, node: Node) -> None:
        """`pg_ctl stop -m immediate`: the node's processes quit without a checkpoint, as a
        machine lost would; the group is killed after, in case anything stayed."""
        assert node.proc is not None
        assert node.running
        await self._run("pg_ctl", "stop", "-m", "immediate", "-w", "-D", str(node.pgdata))
        with contextlib.suppress(ProcessLookupError):
            os.killpg(node.proc.pid, signal.SIGKILL)
        await node.proc.wait()
        node.stops += 1

    async def _answers(self, node: Node) -> bool:
        if node.proc is not None and node.proc.returncode is not None:
            raise AssertionError(f"{node.name} exited with {node.proc.returncode}: see {node.log}")
        try:
            async with await psycopg.AsyncConnection.connect(
                self.conninfo(node, "postgres"), connect_timeout=2
            ) as conn:
                await conn.execute("SELECT 1")
        except psycopg.OperationalError:
            return False
        return True

    async def _until(
        self, condition: Callable[[], Awaitable[bool]], within: float, what: str
    ) -> None:
        deadline = time.monotonic() + within
        while not await condition():
            if time.monotonic() > deadline:
                raise AssertionError(f"waited {within} s for {what}")
            await asyncio.sleep(0.1)

    # --- building it ---------------------------------------------------------------------

    async def build(self) -> None:
        self.logs.mkdir(parents=True, exist_ok=True)
        await asyncio.gather(*(self._initdb(n) for n in self.nodes))
        await asyncio.gather(*(self.start(n) for n in self.nodes))

    async def database(self, name: str | None = None) -> str:
        """A new database on every node with Citus in it, the coordinator's metadata naming
        the workers; returns its URL through the coordinator."""
        name = name or f"meter_{uuid.uuid4().hex[:10]}"
        for node in self.nodes:
            async with await psycopg.AsyncConnection.connect(
                self.conninfo(node, "postgres"), autocommit=True
            ) as conn:
                await conn.execute(f'CREATE DATABASE "{name}"')
            async with await psycopg.AsyncConnection.connect(
                self.conninfo(node, name), autocommit=True
            ) as conn:
                await conn.execute("CREATE EXTENSION citus")
        self.databases.append(name)
        async with await self.connect(self.coordinator, name) as conn:
            await conn.execute(
                "SELECT citus_set_coordinator_host('127.0.0.1', %s)", (self.coordinator.port,)
            )
            for w in self.workers:
                await conn.execute("SELECT citus_add_node('127.0.0.1', %s)", (w.port,))
        return self.url(name)

    async def drop(self, name: str) -> None:
        """Drop a database made by `database()` on every node that runs (first what a
        failed shard move left in it, such as a subscription, which would keep it in use)."""
        if self.coordinator.running:
            with contextlib.suppress(psycopg.Error):
                async with await self.connect(self.coordinator, name) as conn:
                    await conn.execute("CALL citus_cleanup_orphaned_resources()")
        for node in self.nodes:
            if node.running:
                async with await psycopg.AsyncConnection.connect(
                    self.conninfo(node, "postgres"), autocommit=True
                ) as conn:
                    deadline = time.monotonic() + 30
                    while True:
                        try:
                            await conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
                            break
                        except psycopg.errors.ObjectInUse:
                            # A replication slot the cleanup is still letting go of.
                            if time.monotonic() > deadline:
                                raise
                            await asyncio.sleep(0.2)
        with contextlib.suppress(ValueError):
            self.databases.remove(name)

    async def connect(self, node: Node, dbname: str) -> psycopg.AsyncConnection[Any]:
        return await psycopg.AsyncConnection.connect(
            self.conninfo(node, dbname), autocommit=True, connect_timeout=5
        )

    async def close(self) -> None:
        """Kill every process group this cluster started, then remove its directory (the
        nodes' logs are in `logs`, outside it)."""
        for node in self.nodes:
            if node.proc is not None and node.running:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(node.proc.pid, signal.SIGKILL)
                await node.proc.wait()
        shutil.rmtree(self.root, ignore_errors=True)

    # --- what Citus says -----------------------------------------------------------------

    async def placements(self, dbname: str, table: str = "workspaces") -> dict[int, int]:
        """Each shard of `table` and the port of the worker that holds it."""
        async with await self.connect(self.coordinator, dbname) as conn:
            rows = await (
                await conn.execute(
                    "SELECT shardid, nodeport FROM pg_dist_shard_placement"
                    " WHERE shardid IN (SELECT shardid FROM pg_dist_shard"
                    "   WHERE logicalrelid = %s::regclass)",
                    (table,),
                )
            ).fetchall()
        return {int(s): int(p) for s, p in rows}

    async def shard_of(self, dbname: str, workspace_id: str) -> tuple[int, int]:
        """The workspaces shard a workspace is in, and the port of the worker holding it."""
        async with await self.connect(self.coordinator, dbname) as conn:
            row = await (
                await conn.execute(
                    "SELECT s.shardid, p.nodeport FROM pg_dist_shard_placement p"
                    " JOIN pg_dist_shard s USING (shardid)"
                    " WHERE s.shardid ="
                    "   get_shard_id_for_distribution_column('workspaces', %s::text)",
                    (workspace_id,),
                )
            ).fetchone()
        assert row is not None
        return int(row[0]), int(row[1])

    async def move(self, dbname: str, shard: int, to: Node, mode: str = "force_logical") -> None:
        """Move a shard group (the shard and every shard co-located with it) to a worker.
        `force_logical` copies it while writes go on, then blocks them briefly to catch up
        (every distributed table has a primary key, which logical replication needs);
        `block_writes` blocks writes for the whole copy."""
        placements = await self.placements(dbname)
        source = self.worker_on(placements[shard])
        if source is to:
            return
        async with await self.connect(self.coordinator, dbname) as conn:
            for attempt in range(1, MOVE_ATTEMPTS + 1):
                try:
                    await conn.execute(
                        "SELECT citus_move_shard_placement(%s, '127.0.0.1', %s, '127.0.0.1', %s,"
                        " shard_transfer_mode => %s::citus.shard_transfer_mode)",
                        (shard, source.port, to.port, mode),
                    )
                    return
                except psycopg.errors.DeadlockDetected:
                    # Citus cancels a move caught in a distributed deadlock with the writes
                    # it waits for; what it set up is cleaned up, and it can run again (as
                    # the rebalancer would).
                    if attempt == MOVE_ATTEMPTS:
                        raise
                    await conn.execute("CALL citus_cleanup_orphaned_resources()")

    async def prepared_transactions(self, dbname: str) -> dict[str, list[tuple[Any, ...]]]:
        """pg_dist_transaction on every node: the two-phase commits each coordinated in that
        database (kept, with recovery off), by node name."""
        out: dict[str, list[tuple[Any, ...]]] = {}
        for node in self.nodes:
            async with await self.connect(node, dbname) as conn:
                rows = await (
                    await conn.execute("SELECT groupid, gid FROM pg_dist_transaction ORDER BY gid")
                ).fetchall()
            out[node.name] = [tuple(r) for r in rows]
        return out

    async def forget_transactions(self, dbname: str) -> None:
        """Clear pg_dist_transaction on every node: admin calls made before a window that
        must stay free of two-phase commits (reference tables are written on every node)."""
        for node in self.nodes:
            async with await self.connect(node, dbname) as conn:
                await conn.execute("SELECT recover_prepared_transactions()")
                await conn.execute("DELETE FROM pg_dist_transaction")
