"""Catalog use cases: the current and pinned versions, quotes, estimates, publishing."""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Mapping, Sequence
from datetime import datetime
from typing import Protocol

from meter import errors
from meter.catalog.defaults import (
    DEFAULT_PACKAGES,
    find_package,
    load_default_catalog_rules,
    smallest_package_covering,
)
from meter.catalog.document import parse_document
from meter.catalog.estimate import CampaignPlan, Estimate, estimate_campaign, validate_plan
from meter.catalog.model import Catalog, Package, Quote, Rule, Usage
from meter.catalog.pricing import quote, validate_usage


class CatalogStore(Protocol):
    async def ensure_defaults(self, rules: Mapping[str, Rule], pkgs: Sequence[Package]) -> None: ...
    async def current_version(self) -> int: ...
    async def load(self, version: int) -> tuple[Catalog, datetime] | None: ...
    async def packages(self) -> list[Package]: ...
    async def publish(
        self, rules: Mapping[str, Rule], description: str, request_id: str, fingerprint: str
    ) -> tuple[int, bool]: ...


class CatalogService:
    """Catalog versions are immutable, so every version once loaded is kept in memory."""

    def __init__(self, store: CatalogStore) -> None:
        self.store = store
        self._versions: dict[int, Catalog] = {}
        self._created: dict[int, datetime] = {}
        self.current: Catalog = Catalog(0, {})
        self.packages: list[Package] = []

    async def start(self) -> None:
        await self.store.ensure_defaults(load_default_catalog_rules(), DEFAULT_PACKAGES)
        self.packages = await self.store.packages()
        await self.refresh()

    async def refresh(self) -> None:
        """Adopt the newest published version (another replica may have published it)."""
        newest = await self.store.current_version()
        if newest > self.current.version:
            self.current = await self.version(newest)

    async def version(self, version: int) -> Catalog:
        """A given version (0 = current).

        Raises:
            MeterError: NOT_FOUND / CATALOG_VERSION_NOT_FOUND.
        """
        if version == 0:
            return self.current
        found = self._versions.get(version)
        if found is None:
            loaded = await self.store.load(version)
            if loaded is None:
                raise errors.not_found(
                    "CATALOG_VERSION_NOT_FOUND",
                    f"catalog version {version} not found",
                    catalog_version=str(version),
                )
            found, self._created[version] = loaded
            self._versions[version] = found
        return found

    async def ensure_versions(self, versions: Iterable[int]) -> None:
        for v in versions:
            if v not in self._versions:
                await self.version(v)

    def actual_cost(self, operation: str, version: int, usage: Usage) -> int:
        """What a commit's actual usage costs, priced with the hold's version (a ledger Pricer)."""
        catalog = self._versions.get(version) or self.current
        return quote(catalog.rule(operation), usage).expected

    async def quote(self, operation: str, usage: Usage, version: int = 0) -> tuple[Quote, int]:
        validate_usage(usage)
        catalog = await self.version(version)
        return quote(catalog.rule(operation), usage), catalog.version

    async def estimate(self, plan: CampaignPlan, version: int = 0) -> tuple[Estimate, int]:
        validate_plan(plan)
        catalog = await self.version(version)
        return estimate_campaign(catalog.rules, plan), catalog.version

    def package(self, name: str) -> Package:
        return find_package(self.packages, name)

    def suggest_package(self, shortfall: int) -> Package | None:
        return smallest_package_covering(self.packages, shortfall)

    async def publish(
        self, document: str, fmt: str | None, description: str, request_id: str
    ) -> tuple[Catalog, datetime]:
        """Validate a document and store it as a new immutable version.

        Raises:
            MeterError: INVALID_ARGUMENT / INVALID_CATALOG naming the rule and field,
                REQUEST_ID_REUSED.
        """
        rules = parse_document(document, fmt)
        fingerprint = hashlib.blake2b(
            repr((sorted((k, repr(v)) for k, v in rules.items()), description)).encode(),
            digest_size=16,
        ).hexdigest()
        try:
            version, _ = await self.store.publish(rules, description, request_id, fingerprint)
        except ValueError:
            raise errors.request_id_reused(request_id) from None
        catalog = await self.version(version)
        if version > self.current.version:
            self.current = catalog
        return catalog, self._created[version]
