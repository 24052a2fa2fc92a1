"""Signed-in sessions kept on the console's side: the browser holds only a random id.

The token stays in this process (never in a cookie, never in a page), so scripts in the
browser cannot read it and a stolen cookie dies with the process or the idle timeout. Each
session carries its own CSRF token, checked on every POST, and its own gRPC client.
"""

from __future__ import annotations

import hmac
import secrets
import time
from dataclasses import dataclass, field

from meter.client import AsyncMeterClient
from meter.console.access import Access

COOKIE = "meter_console"
IDLE_S = 8 * 3600
MAX_SESSIONS = 1000


@dataclass(slots=True)
class Session:
    """One browser's sign-in: its client, what its token may do, and its CSRF token."""

    id: str
    client: AsyncMeterClient
    access: Access
    signed_in: bool
    owns_client: bool
    csrf: str = field(default_factory=lambda: secrets.token_urlsafe(32))
    seen: float = field(default_factory=time.monotonic)

    def csrf_ok(self, sent: str | None) -> bool:
        return bool(sent) and hmac.compare_digest(self.csrf, sent or "")


class SessionStore:
    """Sessions by id, dropped after IDLE_S without a request (or when too many are open)."""

    def __init__(self) -> None:
        self._sessions: dict[str, Session] = {}

    def get(self, session_id: str | None) -> Session | None:
        if not session_id:
            return None
        found = self._sessions.get(session_id)
        if found is None:
            return None
        now = time.monotonic()
        if now - found.seen > IDLE_S:
            self._sessions.pop(session_id, None)
            return None
        found.seen = now
        return found

    async def open(
        self, client: AsyncMeterClient, access: Access, *, signed_in: bool, owns_client: bool
    ) -> Session:
        """A new session under a fresh random id; idle ones (and, past MAX_SESSIONS, the
        oldest) are closed first."""
        now = time.monotonic()
        for old in [s for s in self._sessions.values() if now - s.seen > IDLE_S]:
            await self.close(old.id)
        if len(self._sessions) >= MAX_SESSIONS:
            await self.close(min(self._sessions.values(), key=lambda s: s.seen).id)
        session = Session(secrets.token_urlsafe(32), client, access, signed_in, owns_client)
        self._sessions[session.id] = session
        return session

    async def close(self, session_id: str) -> None:
        """Forget a session and close its channel (an open server's shared one stays)."""
        session = self._sessions.pop(session_id, None)
        if session is not None and session.owns_client:
            await session.client.close()

    def all(self) -> list[Session]:
        return list(self._sessions.values())
