"""Webhook endpoints (DESIGN.md §9): their URLs, filters, state and signing secrets.

Secrets are stored to sign with, returned only by the calls that make them (create and
rotate), and never logged: Endpoint keeps them out of its repr. What was delivered to an
endpoint, and replays, are in meter.storage.delivery_log_repo.
"""

from __future__ import annotations

import secrets as _secrets
from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from meter import errors
from meter.events.model import Endpoint
from meter.storage.db import Repository, translating
from meter.storage.shards import OneShard, Shards
from meter.webhooks import new_secret

# How long a rotated-out secret keeps signing (DESIGN.md §9).
ROTATION_OVERLAP = "24 hours"

_ENDPOINT_COLUMNS = (
    "endpoint_id, url, description, event_types, workspace_ids, enabled, disabled_reason,"
    " failing_since, previous_until, created_at, updated_at, secret, previous_secret,"
    " request_id, fingerprint, rotate_request_id"
)


def _endpoint(r: Any) -> Endpoint:
    # Whether the rotated-out secret still signs, by this server's clock: the columns are
    # also RETURNING lists, where Citus takes no now() (a clock skew of seconds moves the
    # end of a 24-hour overlap by as much).
    valid = r.previous_until is not None and r.previous_until > datetime.now(UTC)
    keys = (r.secret, r.previous_secret) if valid else (r.secret,)
    return Endpoint(
        endpoint_id=r.endpoint_id,
        url=r.url,
        description=r.description,
        event_types=tuple(r.event_types),
        workspace_ids=tuple(r.workspace_ids),
        enabled=r.enabled,
        disabled_reason=r.disabled_reason,
        failing_since=r.failing_since,
        previous_until=r.previous_until if valid else None,
        created_at=r.created_at,
        updated_at=r.updated_at,
        secrets=tuple(keys),
    )


class WebhooksRepo(Repository):
    """What the endpoint calls of meter.v1.Events read and write."""

    def __init__(self, engine: AsyncEngine, shards: Shards | None = None) -> None:
        super().__init__(engine)
        self.shards = shards or OneShard()

    async def _start_cursors(self, conn: AsyncConnection, endpoint_id: str) -> None:
        """A new endpoint's fan-out starts at every shard group's feed as it is now: it is sent
        the events that come after it."""
        keys = [g.feed_key for g in self.shards.map.groups]
        heads = {
            r.feed_key: r.pos
            for r in await conn.execute(
                text("SELECT feed_key, pos FROM feed_heads WHERE feed_key = ANY(:k)"), {"k": keys}
            )
        }
        await conn.execute(
            text(
                "INSERT INTO webhook_cursors (feed_key, endpoint_id, pos) SELECT k, :e, p"
                " FROM unnest(CAST(:k AS text[]), CAST(:p AS int8[])) AS u(k, p)"
            ),
            {"e": endpoint_id, "k": keys, "p": [heads.get(k, 0) for k in keys]},
        )

    @translating
    async def create_endpoint(
        self,
        url: str,
        event_types: Sequence[str],
        workspace_ids: Sequence[str],
        description: str,
        request_id: str,
        fp: str,
    ) -> tuple[Endpoint, str]:
        """A new endpoint and its secret; a known request id (with the same fingerprint of
        the request) returns the endpoint it made.

        Raises: MeterError REQUEST_ID_REUSED.
        """
        async with self.engine.begin() as conn:
            if request_id:
                row = (
                    await conn.execute(
                        text(
                            f"SELECT {_ENDPOINT_COLUMNS} FROM webhook_endpoints"
                            " WHERE request_id = :r"
                        ),
                        {"r": request_id},
                    )
                ).one_or_none()
                if row is not None:
                    if row.fingerprint != fp:
                        raise errors.request_id_reused(request_id)
                    return _endpoint(row), row.secret
            secret = new_secret()
            row = (
                await conn.execute(
                    text(
                        "INSERT INTO webhook_endpoints (endpoint_id, url, description,"
                        " event_types, workspace_ids, secret, request_id, fingerprint)"
                        " VALUES (:id, :url, :d, :types, :wss, :secret, :r, :fp)"
                        " ON CONFLICT (request_id) DO NOTHING"
                        f" RETURNING {_ENDPOINT_COLUMNS}"
                    ),
                    {
                        "id": "ep_" + _secrets.token_hex(10),
                        "url": url,
                        "d": description,
                        "types": list(event_types),
                        "wss": list(workspace_ids),
                        "secret": secret,
                        "r": request_id or None,
                        "fp": fp,
                    },
                )
            ).one_or_none()
            if row is not None:
                await self._start_cursors(conn, row.endpoint_id)
        if row is None:
            # The same request id won a race meanwhile: answer what it made.
            return await self.create_endpoint(
                url, event_types, workspace_ids, description, request_id, fp
            )
        return _endpoint(row), secret

    @translating
    async def endpoints(self, enabled_only: bool = False) -> list[Endpoint]:
        where = " WHERE enabled" if enabled_only else ""
        rows = await self.fetch_all(
            text(f"SELECT {_ENDPOINT_COLUMNS} FROM webhook_endpoints{where} ORDER BY 1")
        )
        return [_endpoint(r) for r in rows]

    @translating
    async def endpoint(self, endpoint_id: str) -> Endpoint:
        """Raises: MeterError ENDPOINT_NOT_FOUND."""
        async with self.autocommit.connect() as conn:
            row = (
                await conn.execute(
                    text(
                        f"SELECT {_ENDPOINT_COLUMNS} FROM webhook_endpoints WHERE endpoint_id = :e"
                    ),
                    {"e": endpoint_id},
                )
            ).one_or_none()
        if row is None:
            raise _endpoint_not_found(endpoint_id)
        return _endpoint(row)

    @translating
    async def update_endpoint(self, endpoint_id: str, changes: dict[str, Any]) -> Endpoint:
        """Change some of url, description, event_types, workspace_ids, enabled.

        Enabling clears the failure state: an endpoint gets a fresh 5 days (or whatever
        --webhook-disable-after says) before it is disabled again.

        Raises: MeterError ENDPOINT_NOT_FOUND.
        """
        sets = [f"{k} = :{k}" for k in changes] + ["updated_at = now()"]
        if changes.get("enabled") is True:
            sets += ["failing_since = NULL", "disabled_reason = ''"]
        async with self.engine.begin() as conn:
            row = (
                await conn.execute(
                    text(
                        f"UPDATE webhook_endpoints SET {', '.join(sets)}"
                        f" WHERE endpoint_id = :endpoint_id RETURNING {_ENDPOINT_COLUMNS}"
                    ),
                    {**changes, "endpoint_id": endpoint_id},
                )
            ).one_or_none()
        if row is None:
            raise _endpoint_not_found(endpoint_id)
        return _endpoint(row)

    @translating
    async def delete_endpoint(self, endpoint_id: str) -> bool:
        """Remove an endpoint, its pending deliveries and its log; False if it did not exist."""
        # Deliveries first, then the endpoint: the order in which the dispatcher locks them
        # when it records an attempt, so that the two never deadlock.
        async with self.engine.begin() as conn:
            for table in (
                "webhook_deliveries",
                "webhook_attempts",
                "webhook_replays",
                "webhook_cursors",
            ):
                await conn.execute(
                    text(f"DELETE FROM {table} WHERE endpoint_id = :e"), {"e": endpoint_id}
                )
            found = await conn.execute(
                text("DELETE FROM webhook_endpoints WHERE endpoint_id = :e"), {"e": endpoint_id}
            )
        return bool(found.rowcount)

    @translating
    async def rotate_secret(self, endpoint_id: str, request_id: str) -> tuple[Endpoint, str]:
        """A new secret; the old one signs too for 24 hours. A retried rotation (same request
        id) returns the secret it made.

        Raises: MeterError ENDPOINT_NOT_FOUND.
        """
        async with self.engine.begin() as conn:
            row = (
                await conn.execute(
                    text(
                        f"SELECT {_ENDPOINT_COLUMNS} FROM webhook_endpoints"
                        " WHERE endpoint_id = :e FOR UPDATE"
                    ),
                    {"e": endpoint_id},
                )
            ).one_or_none()
            if row is None:
                raise _endpoint_not_found(endpoint_id)
            if request_id and row.rotate_request_id == request_id:
                return _endpoint(row), row.secret
            secret = new_secret()
            row = (
                await conn.execute(
                    text(
                        "UPDATE webhook_endpoints SET previous_secret = secret, secret = :s,"
                        f" previous_until = now() + interval '{ROTATION_OVERLAP}',"
                        " rotate_request_id = :r, updated_at = now()"
                        f" WHERE endpoint_id = :e RETURNING {_ENDPOINT_COLUMNS}"
                    ),
                    {"e": endpoint_id, "s": secret, "r": request_id or None},
                )
            ).one()
        return _endpoint(row), secret


def _endpoint_not_found(endpoint_id: str) -> errors.MeterError:
    return errors.not_found(
        "ENDPOINT_NOT_FOUND", f"no webhook endpoint {endpoint_id!r}", endpoint_id=endpoint_id
    )
