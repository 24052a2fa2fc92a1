"""The batcher's scheduling: batches share work, never a workspace, and keep each
workspace's commands in order."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence

from meter.ledger.batcher import Batcher


class Recorder:
    """An apply function that remembers what ran, and which workspaces were in flight."""

    def __init__(self) -> None:
        self.in_flight: set[str] = set()
        self.overlaps = 0
        self.order: list[tuple[str, int]] = []
        self.sizes: list[int] = []

    async def apply(self, cmds: Sequence[tuple[str, int]]) -> list[int]:
        mine = {ws for ws, _ in cmds}
        if mine & self.in_flight:
            self.overlaps += 1
        self.in_flight |= mine
        self.sizes.append(len(cmds))
        await asyncio.sleep(0.002)  # the batch is "in the database" for a while
        self.order += list(cmds)
        self.in_flight -= mine
        return [n for _, n in cmds]


def _workspace(cmd: tuple[str, int]) -> str:
    return cmd[0]


async def test_concurrent_batches_never_hold_the_same_workspace_and_keep_its_order():
    rec = Recorder()
    batcher: Batcher[tuple[str, int], int] = Batcher(
        rec.apply, workers=4, max_batch=50, key=_workspace
    )
    batcher.start()
    cmds = [(f"ws-{i % 7}", i) for i in range(700)]
    results = await asyncio.gather(*(batcher.submit(c) for c in cmds))
    await batcher.stop()
    assert list(range(700)) == results
    assert 0 == rec.overlaps
    for ws in {w for w, _ in cmds}:
        seen = [n for w, n in rec.order if w == ws]
        assert sorted(seen) == seen
    assert max(rec.sizes) > 1  # commands were batched


async def test_an_idle_batcher_sends_a_command_alone_and_at_once():
    rec = Recorder()
    batcher: Batcher[tuple[str, int], int] = Batcher(rec.apply, workers=2, key=_workspace)
    batcher.start()
    assert 7 == await asyncio.wait_for(batcher.submit(("ws", 7)), 1)
    await batcher.stop()
    assert [1] == rec.sizes


async def test_a_batch_that_breaks_is_replayed_one_command_at_a_time():
    async def apply(cmds: Sequence[tuple[str, int]]) -> list[int]:
        if any(n == 3 for _, n in cmds):
            raise RuntimeError("bad command")
        return [n for _, n in cmds]

    batcher: Batcher[tuple[str, int], int] = Batcher(apply, workers=1, key=_workspace)
    batcher.start()
    outcomes: dict[int, object] = {}
    for n in range(6):
        batcher.submit_nowait((f"ws-{n}", n), lambda o, n=n: outcomes.__setitem__(n, o))
    await batcher.stop()
    assert [0, 1, 2, "RuntimeError", 4, 5] == [
        type(o).__name__ if isinstance(o, Exception) else o for _, o in sorted(outcomes.items())
    ]


async def test_a_waiting_caller_goes_before_the_bulk_queue():
    """A unary call queued behind thousands of stream items runs in the next batch."""
    rec = Recorder()
    batcher: Batcher[tuple[str, int], int] = Batcher(
        rec.apply, workers=1, max_batch=100, key=_workspace
    )
    batcher.start()
    for n in range(1000):
        batcher.submit_nowait((f"ws-{n % 50}", n), lambda o: None)
    assert -1 == await batcher.submit(("ws-solo", -1))
    await batcher.stop()
    assert rec.order.index(("ws-solo", -1)) < 200  # in the first or second batch of 100
