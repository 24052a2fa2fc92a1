"""Principals in PostgreSQL: made and revoked by `meter token`, read by every replica."""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from typing import Any

import sqlalchemy as sa
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncEngine

from meter import errors
from meter.auth.model import Principal, Role
from meter.storage.db import translating
from meter.storage.tables import principals as t


def _principal(row: Any) -> Principal:
    return Principal(
        id=str(row.id),
        name=row.name,
        role=Role(row.role),
        workspaces=frozenset(row.workspaces),
        token_hash=row.token_hash,
        created_at=row.created_at,
        revoked_at=row.revoked_at,
        cert_subject=row.cert_subject,
    )


class PrincipalRepo:
    def __init__(self, engine: AsyncEngine) -> None:
        self.engine = engine

    @translating
    async def active(self) -> list[Principal]:
        """Every principal not revoked (what the server authenticates against)."""
        async with self.engine.connect() as conn:
            rows = await conn.execute(sa.select(t).where(t.c.revoked_at.is_(None)))
            return [_principal(r) for r in rows]

    @translating
    async def all(self) -> list[Principal]:
        async with self.engine.connect() as conn:
            rows = await conn.execute(sa.select(t).order_by(t.c.created_at, t.c.name))
            return [_principal(r) for r in rows]

    @translating
    async def create(
        self,
        name: str,
        role: Role,
        workspaces: Sequence[str],
        token_hash: str,
        cert_subject: str | None,
    ) -> Principal:
        """Store a principal.

        Raises:
            MeterError: PRINCIPAL_EXISTS when an active principal has the name or subject.
        """
        try:
            async with self.engine.begin() as conn:
                row = (
                    await conn.execute(
                        sa.insert(t)
                        .values(
                            name=name,
                            role=role.value,
                            workspaces=sorted(set(workspaces)),
                            token_hash=token_hash,
                            cert_subject=cert_subject,
                        )
                        .returning(t)
                    )
                ).one()
        except IntegrityError:
            raise errors.precondition(
                "PRINCIPAL_EXISTS",
                f"an active principal named {name!r} (or with that certificate subject) exists;"
                " revoke it first or choose another name",
            ) from None
        return _principal(row)

    @translating
    async def revoke(self, name_or_id: str) -> list[Principal]:
        """Revoke the active principal with this name or id; returns what was revoked."""
        match = t.c.name == name_or_id
        if _is_uuid(name_or_id):
            match = sa.or_(match, t.c.id == name_or_id)
        async with self.engine.begin() as conn:
            rows = await conn.execute(
                sa.update(t)
                .where(match, t.c.revoked_at.is_(None))
                .values(revoked_at=sa.func.now())
                .returning(t)
            )
            return [_principal(r) for r in rows]


def _is_uuid(text: str) -> bool:
    try:
        uuid.UUID(text)
    except ValueError:
        return False
    return True
