"""The sweeper: expires overdue holds and lots, on every replica, without stepping on others.

Each round lists the workspaces with something overdue and sweeps them in one transaction
that skips workspaces another transaction has locked (FOR UPDATE SKIP LOCKED): two replicas'
sweepers, or a sweeper and a busy writer, never wait for each other, and whatever is skipped
is picked up by the next round (or expired lazily by the next writer that touches it).
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Sequence

import structlog

from meter.errors import MeterError
from meter.ledger.commands import SweepCmd
from meter.ledger.model import SweepOutcome
from meter.tasks import stop_if_cancelled

log = structlog.get_logger("meter.sweeper")


class Sweeper:
    def __init__(
        self,
        due: Callable[[int], Awaitable[list[str]]],
        sweep: Callable[[Sequence[SweepCmd]], Awaitable[Sequence[object]]],
        interval_s: float = 1.0,
        batch: int = 200,
    ) -> None:
        self._due = due
        self._sweep = sweep
        self.interval_s = interval_s
        self.batch = batch
        self.holds_expired = 0
        self.credits_expired = 0

    async def run_once(self) -> int:
        """One round; returns how many workspaces were due."""
        ids = await self._due(self.batch)
        if not ids:
            return 0
        try:
            results = list(await self._sweep([SweepCmd(w) for w in ids]))
        except MeterError:
            raise
        except Exception:
            # A round is one transaction a shard group: a workspace it cannot write (a bug,
            # or a row an operator changed by hand) would stop every other one with it, in
            # every round. Sweep them one by one instead, and log the one that fails.
            results = []
            for w in ids:
                try:
                    results += await self._sweep([SweepCmd(w)])
                except MeterError:
                    raise
                except Exception:
                    log.exception("sweep.workspace_failed", workspace_id=w)
        for result in results:
            if isinstance(result, SweepOutcome):
                self.holds_expired += result.holds_expired
                self.credits_expired += result.credits_expired
        return len(ids)

    async def run(self) -> None:
        while True:
            try:
                n = await self.run_once()
            except MeterError as e:
                log.warning("sweep.failed", reason=e.reason, error=e.message)
                n = 0
            except Exception:
                log.exception("sweep.crashed")
                n = 0
            stop_if_cancelled()
            # A full round means more is due: go again at once.
            if n < self.batch:
                await asyncio.sleep(self.interval_s)
