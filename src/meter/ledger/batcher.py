"""Group concurrent ledger commands into batches, one database transaction each.

Callers (unary RPCs, streams) submit commands and await their results. A few worker tasks
each take everything queued (up to a batch limit) and apply it in one
transaction, so under load the cost of a commit (its WAL flush) is shared by hundreds of
commands, and when idle a command goes alone with no added wait.

Concurrent batches never share a workspace: a worker leaves in the queue (in order) the
commands of workspaces that a batch in the database holds, and takes them once it is done.
Otherwise two large batches over many workspaces would each wait for the other's row locks
and run one after the other instead of side by side.
"""

from __future__ import annotations

import asyncio
from collections import deque
from collections.abc import Awaitable, Callable, Sequence
from typing import Generic, TypeVar

from meter import errors

C = TypeVar("C")
R = TypeVar("R")

Apply = Callable[[Sequence[C]], Awaitable[list[R]]]


class Batcher(Generic[C, R]):
    """Applies queued commands in batches with a bounded number of concurrent transactions."""

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
    ) -> None:
        self._apply = apply
        self.linger_s = linger_s
        self._busy = 0
        self._on_batch = on_batch  # hears each applied batch's size (metrics)
        self._workers = workers
        self.max_batch = max_batch
        self.max_queue = max_queue
        self._retries = retries
        self._key = key  # the workspace a command belongs to
        self._queue: deque[tuple[C, asyncio.Future[R]]] = deque()
        self._ready = asyncio.Event()
        self._in_flight: set[str] = set()  # workspaces of the batches in the database
        self._tasks: list[asyncio.Task[None]] = []
        self._closing = False

    def start(self) -> None:
        self._tasks = [asyncio.create_task(self._work()) for _ in range(self._workers)]

    async def stop(self) -> None:
        """Refuse new commands, finish what is queued, then stop the workers."""
        self._closing = True
        self._ready.set()
        await asyncio.gather(*self._tasks, return_exceptions=True)

    def submit_nowait(self, cmd: C) -> asyncio.Future[R]:
        """Queue a command; its future resolves to its result.

        Raises:
            MeterError: RESOURCE_EXHAUSTED when the queue is full.
        """
        if self._closing:
            raise errors.unavailable("the server is shutting down; retry on another replica")
        if len(self._queue) >= self.max_queue:
            raise errors.exhausted("OVERLOADED", "too many commands in flight; retry shortly")
        fut: asyncio.Future[R] = asyncio.get_running_loop().create_future()
        self._queue.append((cmd, fut))
        self._ready.set()
        return fut

    async def submit(self, cmd: C) -> R:
        return await self.submit_nowait(cmd)

    async def _work(self) -> None:
        while True:
            await self._ready.wait()
            if not self._queue:
                if self._closing:
                    return
                self._ready.clear()
                continue
            if self._busy and len(self._queue) < self.max_batch and self.linger_s:
                # Under load (other batches are in the database), wait a moment for more
                # commands: one transaction's fixed cost then pays for more of them. When idle,
                # a command goes at once.
                await asyncio.sleep(self.linger_s)
            batch, keys = self._take()
            if not batch:
                # Everything queued waits for a workspace in the database; its batch's end
                # wakes the workers again.
                self._ready.clear()
                continue
            self._busy += 1
            try:
                await self._run(batch)
            finally:
                self._busy -= 1
                self._in_flight -= keys
                if self._queue:
                    self._ready.set()

    def _take(self) -> tuple[list[tuple[C, asyncio.Future[R]]], set[str]]:
        """Up to max_batch queued commands whose workspaces no batch in flight holds."""
        batch: list[tuple[C, asyncio.Future[R]]] = []
        skipped: list[tuple[C, asyncio.Future[R]]] = []
        keys: set[str] = set()
        queue, busy, key = self._queue, self._in_flight, self._key
        while queue and len(batch) < self.max_batch:
            item = queue.popleft()
            k = key(item[0])
            if k in busy:
                skipped.append(item)
            else:
                batch.append(item)
                keys.add(k)
        queue.extendleft(reversed(skipped))
        busy |= keys
        if not queue and not self._closing:
            self._ready.clear()
        return batch, keys

    async def _run(self, batch: list[tuple[C, asyncio.Future[R]]]) -> None:
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
            for (_, fut), result in zip(batch, results, strict=True):
                if not fut.done():
                    fut.set_result(result)
            return


def _fail(batch: list[tuple[C, asyncio.Future[R]]], exc: BaseException) -> None:
    for _, fut in batch:
        if not fut.done():
            fut.set_exception(exc)
