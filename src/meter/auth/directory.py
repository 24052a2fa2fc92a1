"""Principals as the server sees them: looked up by token hash or certificate subject.

Every replica reads the active principals from the database at most CACHE_S seconds before a
call, so a revocation made anywhere takes effect everywhere within that time. A credential the
cache does not know causes a fresh read (at most one per MIN_RELOAD_S), so a token made a
moment ago works at once. The table is small (one row per service), so it is read whole and
searched with constant-time comparisons: how long a lookup takes says nothing about how much
of a hash matched.
"""

from __future__ import annotations

import asyncio
import hmac
import time
from collections.abc import Awaitable, Callable, Sequence

from meter.auth.model import Principal, normalize_subject, token_hash

CACHE_S = 2.0
MIN_RELOAD_S = 0.25

Load = Callable[[], Awaitable[Sequence[Principal]]]
Key = Callable[[Principal], bytes | None]


class Directory:
    """The active principals, read again when older than CACHE_S or asked for an unknown one.

    Reads raise MeterError UNAVAILABLE when the database cannot be read; a stale list is
    never used past its age, so a revoked token cannot outlive an outage.
    """

    def __init__(self, load: Load, cache_s: float = CACHE_S) -> None:
        self._load = load
        self._cache_s = cache_s
        self._principals: Sequence[Principal] = ()
        self._loaded_at = float("-inf")
        self._lock = asyncio.Lock()

    async def principals(self) -> Sequence[Principal]:
        """The active principals, at most CACHE_S old."""
        if time.monotonic() - self._loaded_at > self._cache_s:
            async with self._lock:
                if time.monotonic() - self._loaded_at > self._cache_s:
                    await self._reload()
        return self._principals

    async def _fresh(self) -> Sequence[Principal]:
        """The active principals as read after this call began."""
        asked = time.monotonic()
        async with self._lock:
            if self._loaded_at < asked:
                pause = self._loaded_at + MIN_RELOAD_S - time.monotonic()
                if pause > 0:
                    # Unknown credentials cannot make the server read the table in a loop.
                    await asyncio.sleep(pause)
                await self._reload()
        return self._principals

    async def _reload(self) -> None:
        started = time.monotonic()
        self._principals = tuple(p for p in await self._load() if p.revoked_at is None)
        # Age counts from the start of the read: a revocation committed during it may be missed.
        self._loaded_at = started

    async def by_token(self, token: str) -> Principal | None:
        wanted = token_hash(token).encode()
        return await self._find(lambda p: p.token_hash.encode(), wanted)

    async def by_subject(self, subject: str) -> Principal | None:
        wanted = normalize_subject(subject).encode()
        return await self._find(
            lambda p: normalize_subject(p.cert_subject).encode() if p.cert_subject else None,
            wanted,
        )

    async def _find(self, key: Key, wanted: bytes) -> Principal | None:
        found = _match(await self.principals(), key, wanted)
        if found is None:
            found = _match(await self._fresh(), key, wanted)
        return found


def _match(principals: Sequence[Principal], key: Key, wanted: bytes) -> Principal | None:
    found = None
    for p in principals:
        k = key(p)
        # No early exit: every principal is compared, whichever matches.
        if k is not None and hmac.compare_digest(k, wanted):
            found = p
    return found
