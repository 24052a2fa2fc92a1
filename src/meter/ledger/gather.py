"""Balance reads gathered: however many watchers ask at once, a few queries answer them all.

A burst of watch opens (a page load behind every header badge) or one change heard by the
watchers of many workspaces asks for many balances at the same moment. Each read waits for
the next query of a small fixed number (`slots`, the size of the watchers' own pool, so a
read never waits inside the pool and cannot be refused by it): the reads asked for while
those queries run go together into the next one, one row per workspace, and a workspace
asked for twice is read once. A read joins only a query that has not started yet, so
whatever was committed before it was asked for is in its answer.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Sequence

from meter import errors
from meter.ledger.model import BalanceView

Answer = tuple[BalanceView, int]  # the balance and the id of the workspace's newest alert
ReadMany = Callable[[Sequence[str]], Awaitable[dict[str, Answer]]]

# Workspaces per query: the rows of a few hundred are read and built in a few milliseconds.
MAX_BATCH = 256
# While a query is in flight, the next one waits this long for more reads to join it; a
# read that finds nothing in flight goes at once.
GATHER_S = 0.005


class GatheredReads:
    """Reads of balances, gathered into at most `slots` queries in flight."""

    def __init__(
        self,
        read_many: ReadMany,
        slots: int,
        max_batch: int = MAX_BATCH,
        gather_s: float = GATHER_S,
    ) -> None:
        self._read_many = read_many
        self._gather_s = gather_s
        self._slots = asyncio.Semaphore(slots)
        self._max_batch = max_batch
        self._pending: dict[str, asyncio.Future[Answer]] = {}
        self._runner: asyncio.Task[None] | None = None
        self._queries: set[asyncio.Task[None]] = set()
        self.queries = 0  # queries sent so far

    async def read(self, workspace_id: str) -> Answer:
        """The workspace's balance and newest alert id, read after this call began.

        Raises:
            MeterError: WORKSPACE_NOT_FOUND; UNAVAILABLE when the database is away.
        """
        fut = self._pending.get(workspace_id)
        if fut is None:
            fut = asyncio.get_running_loop().create_future()
            self._pending[workspace_id] = fut
            if self._runner is None or self._runner.done():
                self._runner = asyncio.create_task(self._run(), name="gathered-reads")
        # Shared by every reader of the workspace: one reader's cancellation is not theirs.
        return await asyncio.shield(fut)

    async def _run(self) -> None:
        while self._pending:
            await self._slots.acquire()
            if self._queries and len(self._pending) < self._max_batch:
                # Busy: a burst is arriving, one call per turn of the event loop. Let more of
                # it in, so that one query answers them instead of one query each.
                await asyncio.sleep(self._gather_s)
            # Whatever was asked for while every slot was busy goes into this one query.
            ids = list(self._pending)[: self._max_batch]
            batch = {w: self._pending.pop(w) for w in ids}
            task = asyncio.create_task(self._answer(batch))
            self._queries.add(task)
            task.add_done_callback(self._queries.discard)

    async def _answer(self, batch: dict[str, asyncio.Future[Answer]]) -> None:
        self.queries += 1
        try:
            found = await self._read_many(list(batch))
        except Exception as e:
            for fut in batch.values():
                if not fut.done():
                    fut.set_exception(e)
            return
        finally:
            self._slots.release()
        for workspace_id, fut in batch.items():
            if fut.done():
                continue
            answer = found.get(workspace_id)
            if answer is None:
                fut.set_exception(errors.workspace_not_found(workspace_id))
            else:
                fut.set_result(answer)
