"""Watching a balance: the current state first, then every change and every alert event.

A watcher subscribes to the workspace's notices before it reads the balance, so nothing
committed after that read can slip by. Balance notices only say "something changed": the
watcher reads the balance again and sends it if it differs from the last one sent, so a burst
of changes that outpaces a slow watcher coalesces into the latest state. Alerts are read from
the alerts table by id (dense and in commit order per workspace), so every alert committed
after the watch began is sent exactly once, however many notices were coalesced or lost.
Watchers of one workspace share their reads: one read serves every watcher woken by the
same notices; and reads of many workspaces asked for at once, a burst of opens or the wake-ups
of one busy moment, are gathered into a few queries (meter.ledger.gather).

Notices leave after the commit, so a crash between a commit and its announcement loses one.
As a safety net, `resync` looks every few seconds at when each watched workspace was last
written and wakes the watchers of those written since its last look, who then send the state
if it is news to them.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Sequence
from dataclasses import replace
from datetime import datetime, timedelta
from typing import Protocol

import structlog

from meter import errors
from meter.ledger.gather import GatheredReads
from meter.ledger.model import AlertEvent, BalanceView
from meter.ledger.notify import Notices, Topic
from meter.tasks import stop_if_cancelled

ALERT_PAGE = 100
# A row's write time is its transaction's start, which may be this long before its commit
# (the statement timeout, with room): a workspace's first look reaches back that far.
LOOKBACK = timedelta(seconds=20)

log = structlog.get_logger("meter.watch")


class WatchReads(Protocol):
    async def balances(
        self, workspace_ids: Sequence[str]
    ) -> dict[str, tuple[BalanceView, int]]: ...
    async def alerts_after(self, workspace_id: str, after: int, limit: int) -> list[AlertEvent]: ...
    async def written_at(
        self, workspace_ids: Sequence[str]
    ) -> tuple[dict[str, datetime], datetime]: ...


class BalanceWatch:
    def __init__(self, hub: Notices, reads: WatchReads, slots: int = 1) -> None:
        """`slots`: balance queries in flight at most (the connections of `reads`' pool)."""
        self.hub = hub
        self.reads = reads
        self.gathered = GatheredReads(lambda ids: self.reads.balances(ids), slots)

    async def watch(self, workspace_id: str) -> AsyncIterator[BalanceView | AlertEvent]:
        """The balance now, then each new balance and alert event, until the server stops.

        Raises:
            MeterError: WORKSPACE_NOT_FOUND before anything is sent; UNAVAILABLE when the
                server shuts down (watch again, on any replica) or the database is away.
        """
        with self.hub.subscribe(workspace_id) as sub:
            topic = self.hub.topic(workspace_id)
            assert topic is not None
            sent, last_alert = await self.gathered.read(workspace_id)
            yield sent
            while True:
                await sub.wait()
                if sub.closed:
                    raise errors.unavailable("the server is shutting down; watch again")
                balance, alerts = sub.take()
                if not (balance or alerts):
                    continue
                # One shared read says both whether the balance is news and whether there is
                # an alert to fetch (the workspace row counts them): the wake-ups of a resync
                # or of a grant cost no alerts query per watcher.
                view, newest = await self._latest(workspace_id, topic)
                if balance and _ledger_state(view) != _ledger_state(sent):
                    sent = view
                    yield view
                alerts = newest > last_alert
                while alerts:
                    found = await self.reads.alerts_after(workspace_id, last_alert, ALERT_PAGE)
                    for event in found:
                        last_alert = event.event_id
                        yield event
                    alerts = len(found) == ALERT_PAGE

    async def resync(self, every_s: float) -> None:
        """Forever: every `every_s`, wake the watchers of workspaces written since the last
        look, in case a notice was lost. One query per look, whatever the watchers."""
        seen: dict[str, datetime] = {}  # each watched workspace's write time at the last look
        while True:
            await asyncio.sleep(every_s)
            watched = self.hub.watched()
            if not watched:
                seen = {}
                continue
            try:
                written, now = await self.reads.written_at(watched)
            except errors.MeterError as e:
                log.warning("watch.resync_failed", reason=e.reason)
                stop_if_cancelled()
                continue
            except Exception:  # a bug must not end the safety net for good
                log.exception("watch.resync_crashed")
                stop_if_cancelled()
                continue
            lately = now - LOOKBACK - timedelta(seconds=every_s)
            self.hub.resync(
                [w for w, at in written.items() if _written_since(at, seen.get(w), lately)]
            )
            seen = written

    async def _latest(self, workspace_id: str, topic: Topic) -> tuple[BalanceView, int]:
        """The balance and newest alert id, read after every notice delivered so far; shared
        by the topic's readers.

        No lock: the watchers one notice wakes all ask in the same turn of the event loop and
        join one gathered read; one that wakes later reuses its answer when that read began
        after the notice it heard. (A lock handed from watcher to watcher cost a turn of the
        loop each, so the last of a thousand watchers heard a change last by far.)"""
        wanted = topic.version
        snapshot = topic.snapshot
        if snapshot is not None and snapshot[0] >= wanted:
            answer = snapshot[1]
            assert isinstance(answer, tuple)
            return answer
        answer = await self.gathered.read(workspace_id)
        if topic.snapshot is None or topic.snapshot[0] < wanted:
            topic.snapshot = (wanted, answer)
        return answer


def _written_since(at: datetime, before: datetime | None, lately: datetime) -> bool:
    """Whether a workspace was written since the last look: its write time changed or, at its
    first look (nothing `before`), it was written lately, maybe after its watchers read it."""
    return at != before if before is not None else at >= lately


def _ledger_state(view: BalanceView) -> BalanceView:
    """What makes a balance news: all of it but the runway, which moves with the clock (a
    read a moment later has other days_left and zero_at for the same ledger)."""
    return replace(view, runway=None)
