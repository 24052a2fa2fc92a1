"""Building the ledger's commands from requests: checks, pricing and replay fingerprints.

Each builder checks every field at once (meter.ledger.validation), prices the request with
the current catalog, and digests its parameters so that a replay can be told from a reused
request id; it raises MeterError on bad input and writes nothing. LedgerService inherits
them, so a request is built and run through one object.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping
from datetime import UTC, datetime, timedelta

from meter.catalog.model import Usage
from meter.catalog.pricing import quote
from meter.catalog.service import CatalogService
from meter.ledger.commands import (
    AdjustCmd,
    ChargeCmd,
    CommitCmd,
    ExtendCmd,
    GrantCmd,
    RefundCmd,
    ReleaseCmd,
    ReserveCmd,
    SetThresholdsCmd,
)
from meter.ledger.model import (
    DEFAULT_PRIORITY,
    DEFAULT_TTL_S,
    MAX_PRIORITY,
    MAX_TTL_S,
    MAX_WAIT_FOR_FUNDS_S,
    Category,
)
from meter.ledger.runway import MAX_RUNWAY_DAYS
from meter.ledger.validation import SOURCE_RE, Violations, request_fields

PACKAGE_VALIDITY = timedelta(days=365)


def fingerprint(*parts: object) -> str:
    """A digest of a request's parameters: equal for a replay, different for a reuse."""
    return hashlib.blake2b(repr(parts).encode(), digest_size=12).hexdigest()


def _usage_key(usage: Usage | None) -> tuple[int, int, int, int] | None:
    if usage is None:
        return None
    return (int(usage.complexity), int(usage.length), usage.platforms, usage.items)


def _labels_key(labels: Mapping[str, str]) -> tuple[tuple[str, str], ...]:
    return tuple(sorted(labels.items()))


class CommandBuilder:
    """Validation and pricing: each method raises MeterError on bad input."""

    catalog: CatalogService

    def build_reserve(
        self,
        *,
        workspace_id: str,
        request_id: str,
        operation: str,
        usage: Usage | None,
        amount: int | None,
        actor_id: str,
        labels: Mapping[str, str],
        ttl_s: float | None,
        wait_s: float | None = None,
    ) -> ReserveCmd:
        v = request_fields(workspace_id, request_id, actor_id, labels)
        if ttl_s is not None:
            v.seconds("ttl", ttl_s, 1, MAX_TTL_S)
        if wait_s is not None:
            v.seconds("wait_for_funds", wait_s, 0, MAX_WAIT_FOR_FUNDS_S)
        priced, version = self._price(v, operation, usage, amount)
        return ReserveCmd(
            workspace_id,
            request_id,
            priced,
            operation,
            version,
            actor_id,
            dict(labels),
            ttl_s or DEFAULT_TTL_S,
            fingerprint(
                "reserve",
                operation,
                _usage_key(usage),
                amount,
                actor_id,
                _labels_key(labels),
                ttl_s,
            ),
        )

    def build_charge(
        self,
        *,
        workspace_id: str,
        request_id: str,
        operation: str,
        usage: Usage | None,
        amount: int | None,
        actor_id: str,
        labels: Mapping[str, str],
    ) -> ChargeCmd:
        v = request_fields(workspace_id, request_id, actor_id, labels)
        priced, version = self._price(v, operation, usage, amount)
        return ChargeCmd(
            workspace_id,
            request_id,
            priced,
            operation,
            version,
            actor_id,
            dict(labels),
            fingerprint(
                "charge", operation, _usage_key(usage), amount, actor_id, _labels_key(labels)
            ),
        )

    def build_commit(
        self,
        *,
        workspace_id: str,
        request_id: str,
        usage: Usage | None,
        amount: int | None,
        labels: Mapping[str, str],
    ) -> CommitCmd:
        v = request_fields(workspace_id, request_id, "", labels)
        if amount is not None:
            v.credits("amount", amount)
        v.usage(usage)
        v.raise_if_any()
        return CommitCmd(
            workspace_id,
            request_id,
            amount,
            usage,
            dict(labels),
            fingerprint("commit", _usage_key(usage), amount, _labels_key(labels)),
        )

    def build_release(self, *, workspace_id: str, request_id: str) -> ReleaseCmd:
        request_fields(workspace_id, request_id, "", {}).raise_if_any()
        return ReleaseCmd(workspace_id, request_id)

    def build_extend(self, *, workspace_id: str, request_id: str, ttl_s: float | None) -> ExtendCmd:
        v = request_fields(workspace_id, request_id, "", {})
        if ttl_s is not None:
            v.seconds("ttl", ttl_s, 1, MAX_TTL_S)
        v.raise_if_any()
        return ExtendCmd(workspace_id, request_id, ttl_s or DEFAULT_TTL_S)

    def build_grant(
        self,
        *,
        workspace_id: str,
        request_id: str,
        amount: int,
        package: str,
        expires_at: datetime | None,
        source: str,
        actor_id: str,
        labels: Mapping[str, str],
        category: Category | None = None,
        priority: int | None = None,
        pending: bool = False,
    ) -> GrantCmd:
        v = request_fields(workspace_id, request_id, actor_id, labels)
        if priority is not None and not 0 <= priority <= MAX_PRIORITY:
            v.add("priority", f"must be between 0 and {MAX_PRIORITY}")
        if amount and package:
            v.add("amount", "give either amount or package, not both")
        elif not amount and not package:
            v.add("amount", "give amount or package")
        elif amount:
            v.credits("amount", amount, positive=True)
        if source and not SOURCE_RE.fullmatch(source):
            v.add("source", "must be 1-64 characters of [a-z0-9_-], starting with a letter")
        now = datetime.now(UTC)
        if expires_at is not None and expires_at <= now:
            v.add("expires_at", "must be in the future")
        v.raise_if_any()
        # The policy fields join the digest only when given, so that grants made before they
        # existed replay as they did.
        policy = (
            (category, priority, pending) if category or priority is not None or pending else ()
        )
        fp = fingerprint(
            "grant",
            amount,
            package.casefold(),
            expires_at,
            source,
            actor_id,
            _labels_key(labels),
            *policy,
        )
        name, expires_in = "", None
        if package:
            pkg = self.catalog.package(package)
            amount, name = pkg.credits, pkg.name
            if expires_at is None:
                expires_in = PACKAGE_VALIDITY  # from the grant's time, by the ledger's clock
        source = source or ("purchase" if package else "manual")
        if category is None:
            category = _default_category(source, package)
        return GrantCmd(
            workspace_id,
            request_id,
            amount,
            expires_at,
            source,
            name,
            actor_id,
            dict(labels),
            fp,
            category,
            DEFAULT_PRIORITY if priority is None else priority,
            pending,
            expires_in,
        )

    def build_adjust(
        self, *, workspace_id: str, request_id: str, amount: int, reason: str, actor_id: str
    ) -> AdjustCmd:
        v = request_fields(workspace_id, request_id, actor_id, {})
        if amount == 0:
            v.add("amount", "must not be zero")
        else:
            v.credits("amount", abs(amount))
        v.text("reason", reason, required=True)
        v.raise_if_any()
        return AdjustCmd(
            workspace_id,
            request_id,
            amount,
            reason,
            actor_id,
            fingerprint("adjust", amount, reason, actor_id),
        )

    def build_refund(
        self,
        *,
        workspace_id: str,
        request_id: str,
        charge_request_id: str,
        amount: int,
        reason: str,
        actor_id: str,
    ) -> RefundCmd:
        v = request_fields(workspace_id, request_id, actor_id, {})
        v.id("charge_request_id", charge_request_id)
        v.credits("amount", amount)
        v.text("reason", reason)
        v.raise_if_any()
        return RefundCmd(
            workspace_id,
            request_id,
            charge_request_id,
            amount,
            reason,
            actor_id,
            fingerprint("refund", charge_request_id, amount, reason, actor_id),
        )

    def build_set_thresholds(
        self, *, workspace_id: str, low: int, critical: int, runway_days: int | None = None
    ) -> SetThresholdsCmd:
        """Raises: MeterError INVALID naming the field (0 <= critical <= low <= 10^12;
        0 <= runway_days <= 3650)."""
        v = Violations()
        v.id("workspace_id", workspace_id)
        v.credits("low", low)
        v.credits("critical", critical)
        if runway_days is not None and not 0 <= runway_days <= MAX_RUNWAY_DAYS:
            v.add("runway_days", f"must be between 0 and {MAX_RUNWAY_DAYS}")
        if not v and critical > low:
            v.add("critical", f"must not exceed low ({low})")
        v.raise_if_any()
        return SetThresholdsCmd(workspace_id, low, critical, runway_days)

    # Internals.

    def _price(
        self, v: Violations, operation: str, usage: Usage | None, amount: int | None
    ) -> tuple[int, int]:
        """The credits to hold and the catalog version they were priced with."""
        if amount is not None:
            v.credits("amount", amount)
        elif not operation:
            v.add("operation", "required unless amount is given")
        v.usage(usage)
        v.raise_if_any()
        catalog = self.catalog.current
        if operation:
            rule = catalog.rule(operation)  # OPERATION_NOT_FOUND
            if amount is None:
                return quote(rule, usage or Usage()).max, catalog.version
        return amount or 0, catalog.version


def _default_category(source: str, package: str) -> Category:
    """PAID for packages and purchases, PROMOTIONAL for promotions, MANUAL otherwise."""
    if package or source == "purchase":
        return Category.PAID
    if source.startswith("promo"):
        return Category.PROMOTIONAL
    return Category.MANUAL
