"""Catalog versions and packages in PostgreSQL (reference tables: small, rarely written)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import datetime
from typing import Any

import orjson
from sqlalchemy import func, insert, select, text
from sqlalchemy.ext.asyncio import AsyncEngine

from meter.catalog.model import Catalog, CostUnit, Package, Rule
from meter.events import types
from meter.storage.db import translating
from meter.storage.events_repo import write_global_event
from meter.storage.shards import OneShard, Shards
from meter.storage.tables import catalog_versions, packages

# Publishing takes this lock so that two publications get consecutive version numbers.
_PUBLISH_LOCK = 0x6361746C67  # "catlg"


def rules_to_json(rules: Mapping[str, Rule]) -> dict[str, Any]:
    return {
        key: {
            "display_name": r.display_name,
            "description": r.description,
            "min": r.min,
            "max": r.max,
            "unit": r.unit.value,
        }
        for key, r in rules.items()
    }


def rules_from_json(data: Mapping[str, Any]) -> dict[str, Rule]:
    return {
        key: Rule(
            operation=key,
            display_name=v["display_name"],
            description=v["description"],
            min=v["min"],
            max=v["max"],
            unit=CostUnit(v["unit"]),
            free=v["max"] == 0,
        )
        for key, v in data.items()
    }


class CatalogRepo:
    def __init__(self, engine: AsyncEngine, shards: Shards | None = None) -> None:
        self.engine = engine
        self.shards = shards or OneShard()

    @translating
    async def ensure_defaults(self, rules: Mapping[str, Rule], pkgs: Sequence[Package]) -> None:
        """Load the default catalog (as version 1) and packages into an empty database."""
        async with self.engine.begin() as conn:
            await conn.execute(text("SELECT pg_advisory_xact_lock(:k)"), {"k": _PUBLISH_LOCK})
            if not (
                await conn.execute(select(func.count()).select_from(catalog_versions))
            ).scalar():
                await conn.execute(
                    insert(catalog_versions).values(
                        version=1, rules=rules_to_json(rules), description="default catalog"
                    )
                )
            if not (await conn.execute(select(func.count()).select_from(packages))).scalar():
                await conn.execute(
                    insert(packages),
                    [
                        {
                            "name": p.name,
                            "credits": p.credits,
                            "price_cents": p.price_cents,
                            "currency": p.currency,
                            "position": i,
                        }
                        for i, p in enumerate(pkgs)
                    ],
                )

    @translating
    async def current_version(self) -> int:
        async with self.engine.connect() as conn:
            v = (await conn.execute(select(func.max(catalog_versions.c.version)))).scalar()
        return int(v or 0)

    @translating
    async def load(self, version: int) -> tuple[Catalog, datetime] | None:
        async with self.engine.connect() as conn:
            row = (
                await conn.execute(
                    select(catalog_versions).where(catalog_versions.c.version == version)
                )
            ).one_or_none()
        if row is None:
            return None
        return Catalog(row.version, rules_from_json(row.rules)), row.created_at

    @translating
    async def packages(self) -> list[Package]:
        async with self.engine.connect() as conn:
            rows = (await conn.execute(select(packages).order_by(packages.c.position))).all()
        return [Package(r.name, r.credits, r.price_cents, r.currency) for r in rows]

    @translating
    async def publish(
        self, rules: Mapping[str, Rule], description: str, request_id: str, fingerprint: str
    ) -> tuple[int, bool]:
        """Store a new version; returns (version, created). A known request id returns its version.

        Raises:
            ValueError: the request id was used with another document (the caller maps it).
        """
        async with self.engine.begin() as conn:
            await conn.execute(text("SELECT pg_advisory_xact_lock(:k)"), {"k": _PUBLISH_LOCK})
            if request_id:
                row = (
                    await conn.execute(
                        select(catalog_versions.c.version, catalog_versions.c.fingerprint).where(
                            catalog_versions.c.request_id == request_id
                        )
                    )
                ).one_or_none()
                if row is not None:
                    if row.fingerprint != fingerprint:
                        raise ValueError(request_id)
                    return int(row.version), False
            version = (
                int(
                    (await conn.execute(select(func.max(catalog_versions.c.version)))).scalar() or 0
                )
                + 1
            )
            await conn.execute(
                insert(catalog_versions).values(
                    version=version,
                    rules=rules_to_json(rules),
                    description=description,
                    request_id=request_id or None,
                    fingerprint=fingerprint,
                )
            )
            await write_global_event(
                conn,
                self.shards,
                types.CATALOG_PUBLISHED,
                orjson.dumps(
                    {"version": version, "description": description, "operations": sorted(rules)}
                ).decode(),
            )
            await conn.execute(text("SELECT pg_notify('meter_catalog', :v)"), {"v": str(version)})
        return version, True
