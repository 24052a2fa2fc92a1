"""Ledger use cases: run requests as batched commands, wait for funds, explain refusals.

Mutations become commands (meter.ledger.commands), built by the checks and pricing that
LedgerService inherits from meter.ledger.builders, that the batcher applies in shared
transactions; a refusal comes back as a MeterError and nothing of it is written.
"""

from __future__ import annotations

import asyncio
from contextlib import AbstractContextManager
from dataclasses import replace
from typing import Protocol, TypeVar

from meter import errors
from meter.catalog.service import CatalogService
from meter.ledger.batcher import Batcher, Done
from meter.ledger.builders import CommandBuilder
from meter.ledger.commands import (
    AdjustCmd,
    ChargeCmd,
    Command,
    CommitCmd,
    ExtendCmd,
    GrantCmd,
    RefundCmd,
    ReleaseCmd,
    ReserveCmd,
    SetThresholdsCmd,
)
from meter.ledger.model import (
    BalanceView,
    CommitOutcome,
    EntryOutcome,
    HoldView,
    Outcome,
    ReleaseOutcome,
)

T = TypeVar("T")


class FundsWaiter(Protocol):
    closed: bool

    def take(self) -> tuple[bool, bool]: ...
    async def wait(self, seconds: float | None = None) -> bool: ...


class FundsWatch(Protocol):
    """Wakes waiters when a workspace's balance changes (LISTEN/NOTIFY, meter.ledger.notify).

    A waiter subscribes before its first attempt, so a grant that commits between the refusal
    and the wait still wakes it: waiting cannot miss the change it waits for.
    """

    def changes(self, workspace_id: str) -> AbstractContextManager[FundsWaiter]: ...


class LedgerService(CommandBuilder):
    def __init__(
        self,
        batcher: Batcher[Command, Outcome | errors.MeterError],
        catalog: CatalogService,
        funds: FundsWatch | None = None,
    ) -> None:
        self.batcher = batcher
        self.catalog = catalog
        self.funds = funds

    # Running commands.

    def submit(self, cmd: Command, done: Done[Outcome | errors.MeterError]) -> None:
        """Queue a command (for streams, which collect results as they come): `done` hears
        its outcome, its refusal or the failure of its batch."""
        self.batcher.submit_nowait(cmd, done)

    async def execute(self, cmd: Command) -> Outcome:
        """Run one command and return its outcome; raises its refusal."""
        result = await self.batcher.submit(cmd)
        if isinstance(result, errors.MeterError):
            raise self.explain(result)
        if isinstance(result, BaseException):
            raise result
        return result

    def explain(self, error: errors.MeterError) -> errors.MeterError:
        """Add what a caller needs to act on a refusal (the package that covers a shortfall)."""
        if error.reason == "INSUFFICIENT_CREDITS" and "suggested_package" not in error.metadata:
            pkg = self.catalog.suggest_package(int(error.metadata.get("shortfall", "0")))
            metadata = {**error.metadata, "suggested_package": pkg.name if pkg else ""}
            message = error.message + (f"; the {pkg.name} package covers it" if pkg else "")
            return replace(error, metadata=metadata, message=message)
        return error

    async def reserve(self, cmd: ReserveCmd, wait_s: float | None = None) -> HoldView:
        """Hold credits; with wait_s, wait that long for a grant that makes the balance suffice.

        Waiting holds no database connection: it sleeps on the workspace's change notices and
        tries again after each change of the balance. Only the first refusal is an alert event.
        """
        if not wait_s or self.funds is None:
            return _as(HoldView, await self.execute(cmd))
        loop = asyncio.get_running_loop()
        until = loop.time() + wait_s
        attempt = cmd
        with self.funds.changes(cmd.workspace_id) as changes:
            while True:
                try:
                    return _as(HoldView, await self.execute(attempt))
                except errors.MeterError as e:
                    if e.reason != "INSUFFICIENT_CREDITS":
                        raise
                    attempt = replace(cmd, alert=False)
                    while not changes.closed:
                        left = until - loop.time()
                        if left <= 0 or not await changes.wait(left):
                            raise
                        if changes.take()[0]:
                            break
                    else:
                        # The server is draining: not "insufficient" (a client would give up)
                        # but UNAVAILABLE, so it waits again on another replica.
                        raise errors.unavailable(
                            "the server is shutting down; wait for funds on another replica"
                        ) from e

    async def set_thresholds(self, cmd: SetThresholdsCmd) -> BalanceView:
        return _as(BalanceView, await self.execute(cmd))

    async def commit(self, cmd: CommitCmd) -> CommitOutcome:
        return _as(CommitOutcome, await self.execute(cmd))

    async def release(self, cmd: ReleaseCmd) -> ReleaseOutcome:
        return _as(ReleaseOutcome, await self.execute(cmd))

    async def extend(self, cmd: ExtendCmd) -> HoldView:
        return _as(HoldView, await self.execute(cmd))

    async def charge(self, cmd: ChargeCmd) -> CommitOutcome:
        return _as(CommitOutcome, await self.execute(cmd))

    async def grant(self, cmd: GrantCmd) -> EntryOutcome:
        return _as(EntryOutcome, await self.execute(cmd))

    async def adjust(self, cmd: AdjustCmd) -> EntryOutcome:
        return _as(EntryOutcome, await self.execute(cmd))

    async def refund(self, cmd: RefundCmd) -> EntryOutcome:
        return _as(EntryOutcome, await self.execute(cmd))


def _as(kind: type[T], outcome: Outcome) -> T:
    assert isinstance(outcome, kind), outcome
    return outcome
