"""Group concurrent ledger commands into batches, one database transaction each.

Callers (unary RPCs, streams) submit commands and get their results. A few worker tasks
each take everything queued (up to a batch limit) and apply it in one
transaction, so under load the cost of a commit (its WAL flush) is shared by hundreds of
commands, and when idle a command goes alone with no added wait.

Concurrent batches never share a workspace: a worker leaves in the queue (in order) the
commands of workspaces that a batch in the database holds, and takes them once it is done.
Otherwise two large batches over many workspaces would each wait for the other's row locks
and run one after the other instead of side by side.

A batch holds the commands of one shard group (meter.storage.shards: on Citus, the workspaces
one node holds a shard of; on plain PostgreSQL, all of them), so that its transaction is one
node's alone. Each lane queues commands by group; a worker takes a group's commands, the
groups in turn.
"""

from __future__ import annotations

import asyncio
import functools
from collections import deque
from collections.abc import Awaitable, Callable, Sequence
from contextlib import AbstractContextManager
from typing import Any, Generic, Protocol, TypeVar

from meter import errors

C = TypeVar("C")
R = TypeVar("R")

Apply = Callable[[Sequence[C]], Awaitable[list[R]]]
# Commands (or their results) handled between two turns of the event loop: a batch's work
# is milliseconds of CPU, and calls waiting on the loop go in between.
YIELD_EVERY = 100
# Hears a command's result, or the exception that failed its batch, once.
Done = Callable[[R | BaseException], None]
T = TypeVar("T")


class BatchTrace(Protocol):
    """Traces batches (meter.tracing.BatchSpans): given only when tracing is on, so that
    without it queueing and applying a command do no tracing work at all."""

    def caller(self, done: Callable[[T], None]) -> Callable[[T], None]:
        """`done`, remembering the span of the call that queues its command."""
        ...

    def batch(
        self, dones: Sequence[Callable[..., None]], group: int
    ) -> AbstractContextManager[Any]:
        """The span of one batch's transaction, linked to its callers' spans."""
        ...


class Batcher(Generic[C, R]):
    """Applies queued commands in batches with a bounded number of concurrent transactions.

    Two lanes: a call that awaits its command (a unary RPC) goes in the express lane; a
    stream's items go in the bulk lane with a callback. One more worker than `workers`
    serves the express lane alone, at once, and the others serve it only while no stream
    item is queued: a unary caller never waits for the bulk queue in front of it, nor rides
    in a big batch, nor waits for a free worker while big batches are in the database
    (only, as always, for a batch holding its own workspace). Results reach callbacks
    directly when a batch ends, with no future or event-loop turn per command.
    """

    def __init__(
        self,
        apply: Apply[C, R],
        *,
        workers: int = 4,
        max_batch: int = 1000,
        max_queue: int = 50_000,
        retries: int = 3,
        linger_s: float = 0.001,
        on_batch: Callable[[int], None] | None = None,
        key: Callable[[C], str] = str,
        group: Callable[[C], int] | None = None,
        trace: BatchTrace | None = None,
    ) -> None:
        self._apply = apply
        self._trace = trace
        self.linger_s = linger_s
        self._busy = 0
        self._on_batch = on_batch  # hears each applied batch's size (metrics)
        self._workers = workers
        self.max_batch = max_batch
        self.max_queue = max_queue
        self._retries = retries
        self._key = key  # the workspace a command belongs to
        self._group = group  # and its shard group (None: one group)
        self._express = _Lane[C, R]()
        self._bulk = _Lane[C, R]()
        self._ready = asyncio.Event()  # something is queued
        self._express_ready = asyncio.Event()  # a call is queued
        self._in_flight: set[str] = set()  # workspaces of the batches in the database
        self._tasks: list[asyncio.Task[None]] = []
        self._closing = False

    def start(self) -> None:
        self._tasks = [asyncio.create_task(self._work()) for _ in range(self._workers)]
        self._tasks.append(asyncio.create_task(self._work(express_only=True)))

    async def stop(self) -> None:
        """Refuse new commands, finish what is queued, then stop the workers."""
        self._closing = True
        self._ready.set()
        self._express_ready.set()
        await asyncio.gather(*self._tasks, return_exceptions=True)

    def _check(self) -> None:
        if self._closing:
            raise errors.unavailable("the server is shutting down; retry on another replica")
        if len(self._express) + len(self._bulk) >= self.max_queue:
            raise errors.exhausted("OVERLOADED", "too many commands in flight; retry shortly")

    def submit_nowait(self, cmd: C, done: Done[R]) -> None:
        """Queue a command in the bulk lane; `done` hears its result when its batch ends.

        Raises:
            MeterError: RESOURCE_EXHAUSTED when the queue is full, UNAVAILABLE when stopping.
        """
        self._check()
        if self._trace is not None:
            done = self._trace.caller(done)
        self._bulk.add(self._group(cmd) if self._group else 0, (cmd, done))
        self._ready.set()

    async def submit(self, cmd: C) -> R | BaseException:
        """Run a command in the express lane; its result, or the exception that failed its
        batch (returned, as a callback would hear it)."""
        self._check()
        fut: asyncio.Future[R | BaseException] = asyncio.get_running_loop().create_future()
        group = self._group(cmd) if self._group else 0
        done: Done[R] = functools.partial(_resolve, fut)
        if self._trace is not None:
            done = self._trace.caller(done)
        self._express.add(group, (cmd, done))
        self._ready.set()
        self._express_ready.set()
        return await fut

    async def _work(self, express_only: bool = False) -> None:
        ready = self._express_ready if express_only else self._ready
        while True:
            await ready.wait()
            # While streams keep the bulk lane busy, calls are the express worker's alone:
            # riding in a big batch would make a call wait for all of it. Without stream
            # traffic every worker serves calls.
            if express_only:
                lanes: tuple[_Lane[C, R], ...] = (self._express,)
            elif self._bulk:
                lanes = (self._bulk,)
            else:
                lanes = (self._express,)
            if not any(lanes):
                if self._closing:
                    return
                ready.clear()
                continue
            if (
                not express_only
                and self._busy
                and self.linger_s
                and len(self._bulk) + len(self._express) < self.max_batch
            ):
                # Under load (other batches are in the database), wait a moment for more
                # commands: one transaction's fixed cost (above all its commit's WAL flush)
                # then pays for more of them. When idle, a command goes at once, and the
                # express worker never waits.
                await asyncio.sleep(self.linger_s)
            batch, keys = self._take(lanes)
            if not batch:
                # Everything queued waits for a workspace in the database; its batch's end
                # wakes the workers again.
                ready.clear()
                continue
            self._busy += 1
            try:
                if self._trace is None:
                    await self._run(batch)
                else:
                    group = self._group(batch[0][0]) if self._group else 0
                    with self._trace.batch([d for _, d in batch], group):
                        await self._run(batch)
            finally:
                self._busy -= 1
                self._in_flight -= keys
                if self._express:
                    self._express_ready.set()
                if self._express or self._bulk:
                    self._ready.set()

    def _take(self, lanes: tuple[_Lane[C, R], ...]) -> tuple[list[tuple[C, Done[R]]], set[str]]:
        """Up to max_batch queued commands of one shard group from these lanes, in lane order,
        whose workspaces no batch in flight holds; the rest stay queued in order. The group is
        the first, in turn, with such a command."""
        batch: list[tuple[C, Done[R]]] = []
        keys: set[str] = set()
        busy, key = self._in_flight, self._key
        chosen: int | None = None
        for lane in lanes:
            for group in lane.groups() if chosen is None else (chosen,):
                queue = lane.queue(group)
                if queue is None:
                    continue
                skipped: list[tuple[C, Done[R]]] = []
                before = len(queue)
                while queue and len(batch) < self.max_batch:
                    item = queue.popleft()
                    k = key(item[0])
                    if k in busy:
                        skipped.append(item)
                    else:
                        batch.append(item)
                        keys.add(k)
                queue.extendleft(reversed(skipped))
                lane.settle(group, before - len(queue))
                if batch:
                    chosen = group
                    break
        busy |= keys
        if not self._closing and not self._express:
            self._express_ready.clear()
            if not self._bulk:
                self._ready.clear()
        return batch, keys

    async def _run(self, batch: list[tuple[C, Done[R]]]) -> None:
        cmds = [c for c, _ in batch]
        for attempt in range(self._retries + 1):
            try:
                results = await self._apply(cmds)
            except errors.MeterError as e:
                # Serialization failures and deadlocks are worth another go at once; a lock
                # wait that timed out is not (it already waited its full bound).
                if e.reason == "CONCURRENT_UPDATE" and attempt < self._retries:
                    await asyncio.sleep(0.005 * (attempt + 1))
                    continue
                _fail(batch, e)
                return
            except Exception as e:
                if len(batch) > 1:
                    for one in batch:
                        await self._run([one])
                    return
                _fail(batch, e)
                return
            if self._on_batch is not None:
                self._on_batch(len(batch))
            for i, ((_, done), result) in enumerate(zip(batch, results, strict=True), 1):
                done(result)
                if not i % YIELD_EVERY:
                    # Each result costs its caller's conversion: let the event loop turn.
                    await asyncio.sleep(0)
            return


class _Lane(Generic[C, R]):
    """A lane's queued commands, a queue per shard group, the groups in the order they came
    (a group that empties goes to the back when it has commands again)."""

    __slots__ = ("_n", "_queues")

    def __init__(self) -> None:
        self._queues: dict[int, deque[tuple[C, Done[R]]]] = {}
        self._n = 0

    def add(self, group: int, item: tuple[C, Done[R]]) -> None:
        queue = self._queues.get(group)
        if queue is None:
            queue = self._queues[group] = deque()
        queue.append(item)
        self._n += 1

    def __len__(self) -> int:
        return self._n

    def __bool__(self) -> bool:
        return self._n > 0

    def groups(self) -> list[int]:
        return list(self._queues)

    def queue(self, group: int) -> deque[tuple[C, Done[R]]] | None:
        return self._queues.get(group)

    def settle(self, group: int, taken: int) -> None:
        """`taken` commands were taken from `group`'s queue; forget it if it is empty."""
        self._n -= taken
        if not self._queues[group]:
            del self._queues[group]


def _resolve(fut: asyncio.Future[R | BaseException], result: R | BaseException) -> None:
    if not fut.done():  # else the caller went away
        fut.set_result(result)


def _fail(batch: list[tuple[C, Done[R]]], exc: BaseException) -> None:
    for _, done in batch:
        done(exc)
