"""CPU accounting for a phase: the server process, PostgreSQL's process tree, and the clients.

Everything runs on one host, so /proc tells where the CPU went. PostgreSQL's share is the
whole tree under the postmaster: backends, the WAL writer, the checkpointer and the rest.
A backend that exits during a phase leaves its CPU in the postmaster's cutime/cstime once
it is reaped, so every process is read for both its own and its reaped children's time.

The clients are this process and, where a phase runs part of its load elsewhere, its helper
processes: those are read from /proc like the server, while they are still alive, so their
CPU is counted from the phase's first sample to its last and not from their start-up.
"""

from __future__ import annotations

import os
import re
import time
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

HZ = os.sysconf("SC_CLK_TCK")


def _stat_fields(pid: int) -> list[str] | None:
    """Fields of /proc/PID/stat after the command name (which may hold spaces), or None."""
    try:
        text = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    return text.rsplit(")", 1)[1].split()


def proc_cpu_s(pid: int, children: bool = True) -> float | None:
    """CPU seconds of one process (all its threads), with its reaped children if asked."""
    f = _stat_fields(pid)
    if f is None:
        return None
    # After the name: f[0] is state, so utime, stime, cutime, cstime are f[11:15].
    ticks = int(f[11]) + int(f[12])
    if children:
        ticks += int(f[13]) + int(f[14])
    return ticks / HZ


def parent_pid(pid: int) -> int | None:
    f = _stat_fields(pid)
    return int(f[1]) if f else None


# A client backend's title ends its "user database host(port)" part with the client address.
_CLIENT = re.compile(r"^(?:\S+\(\d+\)|\[local\])$")


def _foreign_backend(pid: int, database: str) -> bool:
    """Whether `pid` is a client backend connected to some other database than ours."""
    try:
        words = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode().split()
    except (OSError, UnicodeDecodeError):
        return False
    return any(_CLIENT.match(w) for w in words) and database not in words


class PgTree:
    """The postmaster that serves a database and every process below it.

    The tree is PostgreSQL's CPU, whichever database it worked for. So that a reader can
    tell when other work shared the server, `foreign_s` sums the live backends of the
    other databases (those that exit mid-phase land in the postmaster's cutime, unnamed).
    """

    def __init__(self, postmaster: int, database: str) -> None:
        self.postmaster = postmaster
        self.database = database

    @classmethod
    def from_backend(cls, backend_pid: int, database: str) -> PgTree | None:
        """The tree of the postmaster whose child is `backend_pid`, if this host can see it."""
        parent = parent_pid(backend_pid)
        return cls(parent, database) if parent else None

    def pids(self) -> list[int]:
        children: dict[int, list[int]] = defaultdict(list)
        for entry in os.scandir("/proc"):
            if entry.name.isdigit():
                ppid = parent_pid(int(entry.name))
                if ppid is not None:
                    children[ppid].append(int(entry.name))
        found, todo = [], [self.postmaster]
        while todo:
            pid = todo.pop()
            found.append(pid)
            todo.extend(children.get(pid, ()))
        return found

    def cpu_s(self) -> tuple[float, dict[int, float]]:
        """CPU seconds of the whole tree, and of each live backend of the other databases."""
        total, foreign = 0.0, {}
        for pid in self.pids():
            s = proc_cpu_s(pid) or 0.0
            total += s
            if pid != self.postmaster and _foreign_backend(pid, self.database):
                foreign[pid] = s
        return total, foreign


@dataclass
class Cpu:
    """CPU seconds spent by each party over `wall_s` seconds (None: not measurable here)."""

    wall_s: float
    server_s: float | None
    pg_s: float | None
    pg_foreign_s: float | None  # part of pg_s: live backends of other databases
    client_s: float  # this process and its helper processes
    children_s: float  # this process's reaped children: pgbench and psql for the references
    helpers_s: float = 0.0  # part of client_s: the helper processes

    def __add__(self, other: Cpu) -> Cpu:
        """Two measurements as one: the CPU and the wall time of both."""

        def add(a: float | None, b: float | None) -> float | None:
            return None if a is None or b is None else a + b

        return Cpu(
            wall_s=self.wall_s + other.wall_s,
            server_s=add(self.server_s, other.server_s),
            pg_s=add(self.pg_s, other.pg_s),
            pg_foreign_s=add(self.pg_foreign_s, other.pg_foreign_s),
            client_s=self.client_s + other.client_s,
            children_s=self.children_s + other.children_s,
            helpers_s=self.helpers_s + other.helpers_s,
        )

    def per_pair_us(self, pairs: int) -> dict[str, float | None]:
        def us(s: float | None) -> float | None:
            return None if s is None or pairs <= 0 else s / pairs * 1e6

        own = None if self.pg_s is None else self.pg_s - (self.pg_foreign_s or 0.0)
        return {
            "server_us": us(self.server_s),
            "pg_us": us(self.pg_s),
            "pg_own_us": us(own),
            "client_us": us(self.client_s),
            "children_us": us(self.children_s),
        }

    def cores(self) -> dict[str, float | None]:
        def c(s: float | None) -> float | None:
            return None if s is None or self.wall_s <= 0 else s / self.wall_s

        return {
            "server": c(self.server_s),
            "pg": c(self.pg_s),
            "pg_foreign": c(self.pg_foreign_s),
            "client": c(self.client_s),
            "helpers": c(self.helpers_s),
        }


@dataclass
class _Sample:
    wall: float
    server: float | None
    pg: float | None
    pg_foreign: dict[int, float] | None
    client: float
    children: float
    helpers: dict[int, float | None]


class CpuMeter:
    """Samples the three parties; `sample()` starts a phase and `since()` ends it.

    `helpers` are client processes of the phase (not this process's reaped children): each
    must be alive at both samples, or its CPU between them could not be read.
    """

    def __init__(
        self,
        pg: PgTree | None,
        server_pids: Sequence[int] = (),
        helpers: Sequence[int] = (),
    ) -> None:
        self.pg = pg
        self.server_pids = tuple(server_pids)  # the server's processes (its workers too)
        self.helpers = tuple(helpers)

    def sample(self) -> _Sample:
        me = os.times()
        pg, foreign = self.pg.cpu_s() if self.pg else (None, None)
        return _Sample(
            wall=time.perf_counter(),
            # The server has no children of its own: its threads are in its own fields.
            server=(
                sum(proc_cpu_s(p, children=False) or 0.0 for p in self.server_pids)
                if self.server_pids
                else None
            ),
            pg=pg,
            pg_foreign=foreign,
            client=me.user + me.system,
            children=me.children_user + me.children_system,
            helpers={pid: proc_cpu_s(pid) for pid in self.helpers},
        )

    def since(self, start: _Sample) -> Cpu:
        end = self.sample()

        def delta(a: float | None, b: float | None) -> float | None:
            return None if a is None or b is None else b - a

        helpers = 0.0
        for pid in self.helpers:
            a, b = start.helpers.get(pid), end.helpers.get(pid)
            # A helper gone by either sample would leave a hole in the client's CPU that no
            # other reading fills (once reaped, it is only in the anonymous children sum).
            if a is None or b is None:
                raise RuntimeError(f"helper process {pid} was not running at both CPU samples")
            helpers += b - a
        return Cpu(
            wall_s=end.wall - start.wall,
            server_s=delta(start.server, end.server),
            pg_s=delta(start.pg, end.pg),
            pg_foreign_s=_foreign_delta(start.pg_foreign, end.pg_foreign),
            client_s=end.client - start.client + helpers,
            children_s=end.children - start.children,
            helpers_s=helpers,
        )


def _foreign_delta(start: dict[int, float] | None, end: dict[int, float] | None) -> float | None:
    """Other databases' backend CPU between two samples, backend by backend (one that
    exited in between is left out rather than counted negative)."""
    if start is None or end is None:
        return None
    return sum(s - start.get(pid, 0.0) for pid, s in end.items())
