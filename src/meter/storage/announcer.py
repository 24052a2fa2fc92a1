"""Announce committed changes to every replica: NOTIFY after commit, never inside it.

PostgreSQL serializes the commits of transactions that issued NOTIFY (a global lock is held
across each one's WAL flush), so a NOTIFY inside the ledger's batch transactions would undo
group commit: every batch would wait for the previous batch's fsync. Instead the ledger
hands each committed batch's changed workspaces and new alerts to this announcer, which
sends them from its own autocommit connection, coalescing whatever accumulates while a send
is under way. Such a transaction writes no WAL, so it costs no fsync.

Notices are wake-ups, not data: watchers read the state itself. A notice lost in a crash
between a commit and its announcement delays a watcher until the next change of that
workspace (watchers also re-read on reconnect), it never makes a balance wrong.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Iterable

import psycopg
import structlog

log = structlog.get_logger("meter.announcer")

BALANCE_CHANNEL = "meter_balance"
ALERT_CHANNEL = "meter_alert"
# Events were written (DESIGN.md §9): wakes every replica's webhook dispatcher.
EVENT_CHANNEL = "meter_event"
# Workspace ids per notice: ids are at most 128 characters and NOTIFY payloads 8000 bytes.
IDS_PER_NOTICE = 50
# How long changes gather before they are sent together: one statement announces every
# batch committed meanwhile, well inside the 100 ms in which watchers must hear of a change.
# Each announcement costs a round trip here and a transaction in PostgreSQL, so at a few
# hundred batches a second a longer gather saves both.
GATHER_S = 0.02

_SEND = "SELECT pg_notify(c, p) FROM unnest(%(channels)s::text[], %(payloads)s::text[]) AS n(c, p)"


class Announcer:
    def __init__(self, url: str) -> None:
        self.url = url
        self._balances: set[str] = set()
        self._alerts: list[str] = []
        self._events = False
        self._ready = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self.sent = 0

    def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name="announcer")

    async def stop(self) -> None:
        """Send what is pending (briefly), then stop."""
        if self._task is None:
            return
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._drained(), 2.0)
        self._task.cancel()
        await asyncio.gather(self._task, return_exceptions=True)

    async def _drained(self) -> None:
        while self._balances or self._alerts or self._events:  # noqa: ASYNC110 - shutdown only, bounded above
            await asyncio.sleep(0.01)

    def committed(
        self, workspaces: Iterable[str], alerts: Iterable[tuple[int, str]], events: int = 0
    ) -> None:
        """Note what a committed batch changed; it is announced shortly."""
        self._balances.update(workspaces)
        self._alerts += [f"{event_id} {workspace_id}" for event_id, workspace_id in alerts]
        self._events = self._events or events > 0
        if self._balances or self._alerts or self._events:
            self._ready.set()

    async def _run(self) -> None:
        conn: psycopg.AsyncConnection[object] | None = None
        while True:
            await self._ready.wait()
            await asyncio.sleep(GATHER_S)
            self._ready.clear()
            balances, self._balances = sorted(self._balances), set()
            alerts, self._alerts = self._alerts, []
            channels = [ALERT_CHANNEL] * len(alerts)
            payloads = list(alerts)
            if self._events:
                self._events = False
                channels.append(EVENT_CHANNEL)
                payloads.append("")
            for i in range(0, len(balances), IDS_PER_NOTICE):
                channels.append(BALANCE_CHANNEL)
                payloads.append(" ".join(balances[i : i + IDS_PER_NOTICE]))
            try:
                if conn is None or conn.closed:
                    conn = await psycopg.AsyncConnection.connect(
                        self.url,
                        autocommit=True,
                        connect_timeout=5,
                        application_name="meter-announcer",
                    )
                await conn.execute(_SEND, {"channels": channels, "payloads": payloads})
                self.sent += len(payloads)
            except (psycopg.Error, OSError) as e:
                # The database is away: these notices are lost (see the module docstring).
                log.warning(
                    "announce.failed", error=str(e) or type(e).__name__, notices=len(payloads)
                )
                if conn is not None:
                    with contextlib.suppress(Exception):
                        await conn.close()
                conn = None
                await asyncio.sleep(0.5)
