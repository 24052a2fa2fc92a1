"""The mixed phase's background load (Stream fleet, WatchBalance watchers, history readers) in
a process of its own, as production's worker pools and web app are beside a unary caller.

In one event loop with the unary workers, the fleet's large response messages and the
watchers' messages delay the unary workers' own wake-ups, and that delay would be timed as
Reserve latency. The parent starts this module as a child:

    python -m bench.background    (one JSON line of `Params` on stdin)

and the child answers on stdout with one JSON line per event: `started` once its loads are
under way, then `done` with their tallies. It then waits for the parent to close its stdin
(at most EXIT_WAIT_S) before exiting, so the parent's last CPU reading of it, taken from
/proc, sees all of its work. Every step on both sides is bounded: the child ends its own run
by a deadline, and the parent kills a child that overruns its own.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import json
import os
import select
import subprocess
import sys
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

from bench import load

# The child's interpreter start and its grpc import, on a host the server and PostgreSQL
# may be keeping busy, take a second or two; this bound is for a child that is stuck.
STARTUP_TIMEOUT_S = 60.0
# After its `seconds` the child's loads drain for at most load.DRAIN_S, and a history read
# begun just before the deadline may take load.CALL_TIMEOUT_S; beyond both and a margin the
# child gives up by itself.
RUN_BOUND_S = load.DRAIN_S + load.CALL_TIMEOUT_S + 10.0
EXIT_WAIT_S = 10.0
# The `done` line carries every history read's latency: far over asyncio's 64 KiB default.
LINE_LIMIT = 64 << 20
ROOT = Path(__file__).resolve().parents[1]


@dataclass
class Params:
    target: str
    workspaces: list[str]  # the Stream fleet's and the history readers'
    watched: list[str]  # one WatchBalance each
    streams: int
    in_flight: int
    readers: int
    seconds: int


@dataclass
class Tallies:
    stream: load.Tally
    watch: load.Tally
    history: load.Tally


# -- the child -------------------------------------------------------------------------------


def _emit(out: IO[str], event: str, **fields: Any) -> None:
    out.write(json.dumps({"event": event, **fields}) + "\n")
    out.flush()


async def _run(p: Params, out: IO[str]) -> Tallies:
    async with asyncio.timeout(p.seconds + RUN_BOUND_S):
        work = asyncio.gather(
            load.stream_pairs(p.target, p.workspaces, p.streams, p.in_flight, p.seconds),
            load.watch_balances(p.target, p.watched, p.seconds),
            load.history_reads(p.target, p.workspaces, p.readers, p.seconds),
        )
        # One turn of the loop lets every load open its channel and start its calls (and
        # start its clock), so `started` follows the loads rather than precedes them.
        await asyncio.sleep(0)
        _emit(out, "started")
        stream, watch, history = await work
    return Tallies(stream, watch, history)


def main() -> None:
    params = Params(**json.loads(sys.stdin.readline()))
    # stdout is the protocol channel: keep a handle on it and point fd 1 at stderr, so a
    # stray print from any library cannot corrupt a message.
    out = os.fdopen(os.dup(1), "w")
    os.dup2(2, 1)
    tallies = asyncio.run(_run(params, out))
    _emit(out, "done", tallies=dataclasses.asdict(tallies))
    # Readable at EOF, which is the parent's word that it has read this process's CPU.
    select.select([sys.stdin], [], [], EXIT_WAIT_S)


# -- the parent ------------------------------------------------------------------------------


class Background:
    """The running child, as `running()` hands it over: its loads are under way."""

    def __init__(self, proc: asyncio.subprocess.Process, params: Params) -> None:
        self.proc = proc
        self.params = params
        self.deadline = 0.0  # time.monotonic() by which the tallies must have come

    @property
    def pid(self) -> int:
        return self.proc.pid

    async def _event(self, name: str, within_s: float) -> dict[str, Any]:
        assert self.proc.stdout is not None
        async with asyncio.timeout(within_s):
            line = await self.proc.stdout.readline()
        if not line:
            code = await self.proc.wait()
            raise RuntimeError(f"the background load exited with code {code} before {name!r}")
        msg: dict[str, Any] = json.loads(line)
        if msg.get("event") != name:
            raise RuntimeError(f"the background load sent {msg.get('event')!r}, not {name!r}")
        return msg

    async def _started(self) -> None:
        await self._event("started", STARTUP_TIMEOUT_S)
        # Counted from `started`, a little beyond the child's own bound on its run.
        self.deadline = time.monotonic() + self.params.seconds + RUN_BOUND_S + EXIT_WAIT_S

    async def result(self) -> Tallies:
        """The child's tallies, once its loads have ended and drained."""
        msg = await self._event("done", max(0.0, self.deadline - time.monotonic()))
        t = msg["tallies"]
        return Tallies(**{k: load.Tally(**t[k]) for k in ("stream", "watch", "history")})

    async def _close(self) -> None:
        """Let the child exit (closing its stdin), and kill it if it has not by EXIT_WAIT_S."""
        if self.proc.stdin is not None:
            self.proc.stdin.close()
        try:
            await asyncio.wait_for(self.proc.wait(), EXIT_WAIT_S)
        except TimeoutError:
            await self._kill()

    async def _kill(self) -> None:
        # It may have exited on its own in the meantime, which is as good.
        with contextlib.suppress(ProcessLookupError):
            self.proc.kill()
        await self.proc.wait()


@contextlib.asynccontextmanager
async def running(params: Params) -> AsyncIterator[Background]:
    """The background load in a child process, from its `started` to its exit; the child is
    killed if anything in the block fails or it does not exit when told to."""
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "bench.background",
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        # The bench package is found from the repository root, wherever the run began.
        cwd=ROOT,
        limit=LINE_LIMIT,
    )
    bg = Background(proc, params)
    try:
        assert proc.stdin is not None
        proc.stdin.write((json.dumps(dataclasses.asdict(params)) + "\n").encode())
        await proc.stdin.drain()
        await bg._started()
        yield bg
    except BaseException:
        await bg._kill()
        raise
    await bg._close()


if __name__ == "__main__":
    main()
