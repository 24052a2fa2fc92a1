"""Change notices fanned out to this process's watchers and waiting reservations.

The database announces every committed change of a workspace row and every new alert
(LISTEN/NOTIFY, see meter.storage.listener); this hub passes them on to whoever in this
process watches that workspace. It never queues work behind a slow reader: a subscription is
two flags and the highest alert id announced, so delivering a notice is O(subscribers of the
workspace) and never blocks. Intermediate balance changes coalesce into "something changed,
read the latest"; alerts are never lost because a reader fetches every alert after the last
one it sent from the alerts table (the journal of events stays the truth, notices only wake).
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field


@dataclass(eq=False, slots=True)
class Subscription:
    """One reader of one workspace's notices.

    `balance` and `alerts` say what changed since the reader last looked; `wake` is set
    whenever one of them is, and when the hub closes (`closed`).
    """

    workspace_id: str
    balance: bool = False
    alerts: bool = False
    closed: bool = False
    wake: asyncio.Event = field(default_factory=asyncio.Event)

    def take(self) -> tuple[bool, bool]:
        """What changed since the last take: (balance, alerts); clears both."""
        changed = (self.balance, self.alerts)
        self.balance = self.alerts = False
        self.wake.clear()
        return changed

    async def wait(self, seconds: float | None = None) -> bool:
        """Wait for a notice (or the hub closing); False when `seconds` passed first."""
        if self.wake.is_set():
            return True
        # asyncio.timeout, not wait_for: on Python 3.11 wait_for returns normally when the
        # task is cancelled just as the event is set, and the cancellation is lost.
        try:
            async with asyncio.timeout(seconds):
                await self.wake.wait()
        except TimeoutError:
            return False
        return True


@dataclass(eq=False, slots=True)
class Topic:
    """A workspace's subscribers, and a counter of notices for shared reads."""

    subscribers: set[Subscription] = field(default_factory=set)
    version: int = 0
    # The latest balance read on behalf of the topic's readers, tagged with the version
    # counted before the read began: readers woken at or below that version can reuse it.
    snapshot: tuple[int, object] | None = None


class Notices:
    """Fan-out of balance and alert notices to in-process subscribers, keyed by workspace."""

    def __init__(self) -> None:
        self._topics: dict[str, Topic] = {}
        self.closed = False

    # Publishing (the listener).

    def balance_changed(self, workspace_id: str) -> None:
        for sub in self._counted(workspace_id):
            sub.balance = True
            sub.wake.set()

    def alert_added(self, workspace_id: str) -> None:
        for sub in self._counted(workspace_id):
            sub.alerts = True
            sub.wake.set()

    def _counted(self, workspace_id: str) -> Iterable[Subscription]:
        """The workspace's subscribers (none when nobody watches it), once this notice is
        counted in its topic's version."""
        topic = self._topics.get(workspace_id)
        if topic is None:
            return ()
        # Readers woken by this notice check in a shared read: it must be one made after it.
        topic.version += 1
        return topic.subscribers

    def resync(self, workspace_ids: Iterable[str] | None = None) -> None:
        """Notices may have been lost: wake the readers of these workspaces (all of them when
        the listening connection dropped) to read the current state."""
        for wid in list(self._topics) if workspace_ids is None else workspace_ids:
            self.balance_changed(wid)
            self.alert_added(wid)

    def watched(self) -> list[str]:
        """The workspaces someone in this process is subscribed to."""
        return list(self._topics)

    def close(self) -> None:
        """Stop: wake every reader for the last time; new subscriptions start closed."""
        self.closed = True
        for topic in self._topics.values():
            for sub in topic.subscribers:
                sub.closed = True
                sub.wake.set()

    # Subscribing (watchers, waiting reservations).

    @contextlib.contextmanager
    def subscribe(self, workspace_id: str) -> Iterator[Subscription]:
        """Receive the workspace's notices for the length of the block."""
        sub = Subscription(workspace_id, closed=self.closed)
        if sub.closed:
            sub.wake.set()
        topic = self._topics.setdefault(workspace_id, Topic())
        topic.subscribers.add(sub)
        try:
            yield sub
        finally:
            topic.subscribers.discard(sub)
            if not topic.subscribers and self._topics.get(workspace_id) is topic:
                del self._topics[workspace_id]

    def topic(self, workspace_id: str) -> Topic | None:
        return self._topics.get(workspace_id)

    @property
    def subscribers(self) -> int:
        return sum(len(t.subscribers) for t in self._topics.values())

    # FundsWatch (meter.ledger.service): a waiting Reserve sleeps here, holding no connection.

    def changes(self, workspace_id: str) -> contextlib.AbstractContextManager[Subscription]:
        return self.subscribe(workspace_id)
