"""The watchers' safety net: a watched workspace is woken once per write it did not hear of,
not at every look."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta

from meter.ledger.notify import Notices
from meter.ledger.watch import BalanceWatch

T0 = datetime(2026, 1, 1, tzinfo=UTC)


class Rows:
    """What the database says: each workspace's write time, and a clock that advances."""

    def __init__(self) -> None:
        self.written: dict[str, datetime] = {}
        self.now = T0
        self.looks = 0
        self.looked = asyncio.Event()

    async def written_at(
        self, workspace_ids: Sequence[str]
    ) -> tuple[dict[str, datetime], datetime]:
        self.looks += 1
        self.looked.set()
        self.now += timedelta(seconds=1)
        return {w: self.written[w] for w in workspace_ids if w in self.written}, self.now


async def looks(rows: Rows, n: int) -> None:
    """Return after `n` more looks (each look's wake-ups happen before the next await)."""
    for _ in range(n):
        rows.looked.clear()
        await asyncio.wait_for(rows.looked.wait(), 5)


async def test_a_workspace_is_woken_once_per_write_not_at_every_look():
    hub, rows = Notices(), Rows()
    rows.written = {"ws-old": T0 - timedelta(days=1), "ws-new": T0}
    watch = BalanceWatch(hub, rows)  # type: ignore[arg-type]
    with hub.subscribe("ws-old") as old, hub.subscribe("ws-new") as new:
        task = asyncio.create_task(watch.resync(0.001))
        try:
            await looks(rows, 1)
            # First look: only what was written lately may be news to its watchers.
            assert (False, True) == (old.take()[0], new.take()[0])

            await looks(rows, 3)
            assert (False, False) == (old.take()[0], new.take()[0])  # nothing written since

            rows.written["ws-old"] = rows.now  # a write whose notice was lost
            await looks(rows, 2)
            assert (True, False) == (old.take()[0], new.take()[0])
            await looks(rows, 3)
            assert (False, False) == (old.take()[0], new.take()[0])
        finally:
            task.cancel()
