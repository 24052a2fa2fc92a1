"""The LISTEN connection: PostgreSQL's change notices, from whichever replica committed them.

Every replica's announcer (meter.storage.announcer) sends, after each ledger commit,
`pg_notify('meter_balance', '<workspace_id> <workspace_id> ...')` naming the workspaces it
changed and `pg_notify('meter_alert', '<event_id> <workspace_id>')` for each new alert;
PostgreSQL delivers them to every listening session. One autocommit
connection per process listens and hands each notice to the in-process hub
(meter.ledger.notify.Notices), so writers pay nothing for watchers and no watcher holds a
connection. When the connection drops, it reconnects with backoff and tells the hub to resync
(notices sent meanwhile are lost; readers re-read the current state instead).
"""

from __future__ import annotations

import asyncio
import contextlib
import random
from collections.abc import Callable

import psycopg
import structlog

from meter.ledger.notify import Notices
from meter.storage.announcer import ALERT_CHANNEL, BALANCE_CHANNEL, EVENT_CHANNEL

log = structlog.get_logger("meter.listener")

# How long the connection may stay silent before a query checks that it is still alive.
PING_S = 10.0
# Reconnection backoff, first and longest: at most a second, so that after a failover
# notices flow again (and watchers resync) within about a second of the new primary.
BACKOFF_S = (0.1, 1.0)


class Listener:
    """Keeps one LISTEN session open and forwards its notices to a Notices hub."""

    def __init__(self, url: str, hub: Notices, on_events: Callable[[], None] | None = None) -> None:
        """`on_events` is called when some replica has written events."""
        self.url = url
        self.hub = hub
        self.on_events = on_events
        self.connected = asyncio.Event()
        self.reconnects = 0
        self._task: asyncio.Task[None] | None = None

    async def start(self, within_s: float = 5.0) -> None:
        """Start listening; wait (up to `within_s`) until the first LISTEN is in place.

        A server that starts while the database is briefly away still starts: the listener
        keeps trying in the background.
        """
        self._task = asyncio.create_task(self._run(), name="listener")
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self.connected.wait(), within_s)

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)

    async def _run(self) -> None:
        delay = BACKOFF_S[0]
        while True:
            try:
                async with await psycopg.AsyncConnection.connect(
                    self.url,
                    autocommit=True,
                    connect_timeout=5,
                    application_name="meter-listener",
                    keepalives=1,
                    keepalives_idle=10,
                    keepalives_interval=5,
                    keepalives_count=3,
                ) as conn:
                    await conn.execute(
                        f"LISTEN {BALANCE_CHANNEL}; LISTEN {ALERT_CHANNEL}; LISTEN {EVENT_CHANNEL}"
                    )
                    if self.reconnects:
                        # Whatever was committed while no one listened: readers re-read.
                        self.hub.resync()
                    self.connected.set()
                    delay = BACKOFF_S[0]
                    log.info("listener.connected", reconnects=self.reconnects)
                    await self._listen(conn)
            except asyncio.CancelledError:
                raise
            except Exception as e:  # the connection is gone, whatever the cause
                self.connected.clear()
                log.warning("listener.disconnected", error=str(e) or type(e).__name__)
            self.reconnects += 1
            await asyncio.sleep(delay * (0.5 + random.random()))
            delay = min(delay * 2, BACKOFF_S[1])

    async def _listen(self, conn: psycopg.AsyncConnection[object]) -> None:
        while True:
            async for n in conn.notifies(timeout=PING_S):
                if n.channel == BALANCE_CHANNEL:
                    for workspace_id in n.payload.split(" "):
                        self.hub.balance_changed(workspace_id)
                elif n.channel == ALERT_CHANNEL:
                    _, _, workspace_id = n.payload.partition(" ")
                    self.hub.alert_added(workspace_id)
                elif n.channel == EVENT_CHANNEL and self.on_events is not None:
                    self.on_events()
            # Silence: prove the session is alive (a dead one raises here and reconnects).
            await conn.execute("SELECT 1")
