"""Ledger use cases: validate and price requests, run them as batched commands, read balances.

Mutations become commands (meter.ledger.commands) that the batcher applies in shared
transactions; a refusal comes back as a MeterError and nothing of it is written.
"""

from __future__ import annotations

import asyncio
import hashlib
from collections.abc import Mapping, Sequence
from contextlib import AbstractContextManager
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from typing import Protocol, TypeVar

from meter import errors
from meter.catalog.model import Usage
from meter.catalog.pricing import quote, validate_usage
from meter.catalog.service import CatalogService
from meter.ledger.batcher import Batcher, Done
from meter.ledger.commands import (
    AdjustCmd,
    ChargeCmd,
    Command,
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
    BalanceView,
    Category,
    CommitOutcome,
    EntryOutcome,
    HoldView,
    Outcome,
    ReleaseOutcome,
)
from meter.ledger.validation import SOURCE_RE, Violations

PACKAGE_VALIDITY = timedelta(days=365)

T = TypeVar("T")


class FundsWaiter(Protocol):
    closed: bool

    def take(self) -> tuple[bool, bool]: ...
    async def wait(self, seconds: float | None = None) -> bool: ...


class FundsWatch(Protocol):
    """Wakes waiters when a workspace's balance changes (LISTEN/NOTIFY, meter.ledger.notify).

    A waiter subscribes before its first attempt, so a grant that commits between the refusal
    and the wait still wakes it: waiting cannot miss the change it waits for.
    """

    def changes(self, workspace_id: str) -> AbstractContextManager[FundsWaiter]: ...


def fingerprint(*parts: object) -> str:
    """A digest of a request's parameters: equal for a replay, different for a reuse."""
    return hashlib.blake2b(repr(parts).encode(), digest_size=12).hexdigest()


def _usage_key(usage: Usage | None) -> tuple[int, int, int, int] | None:
    if usage is None:
        return None
    return (int(usage.complexity), int(usage.length), usage.platforms, usage.items)


def _labels_key(labels: Mapping[str, str]) -> tuple[tuple[str, str], ...]:
    return tuple(sorted(labels.items()))


class LedgerService:
    def __init__(
        self,
        batcher: Batcher[Command, Outcome | errors.MeterError],
        catalog: CatalogService,
        funds: FundsWatch | None = None,
    ) -> None:
        self.batcher = batcher
        self.catalog = catalog
        self.funds = funds

    # Building commands: validation and pricing. Each raises MeterError on bad input.

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
        v = self._common(workspace_id, request_id, actor_id, labels)
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
        v = self._common(workspace_id, request_id, actor_id, labels)
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
        v = self._common(workspace_id, request_id, "", labels)
        if amount is not None:
            v.credits("amount", amount)
        _check_usage(v, usage)
        _raise(v)
        return CommitCmd(
            workspace_id,
            request_id,
            amount,
            usage,
            dict(labels),
            fingerprint("commit", _usage_key(usage), amount, _labels_key(labels)),
        )

    def build_release(self, *, workspace_id: str, request_id: str) -> ReleaseCmd:
        _raise(self._common(workspace_id, request_id, "", {}))
        return ReleaseCmd(workspace_id, request_id)

    def build_extend(self, *, workspace_id: str, request_id: str, ttl_s: float | None) -> ExtendCmd:
        v = self._common(workspace_id, request_id, "", {})
        if ttl_s is not None:
            v.seconds("ttl", ttl_s, 1, MAX_TTL_S)
        _raise(v)
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
        v = self._common(workspace_id, request_id, actor_id, labels)
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
        _raise(v)
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
        name = ""
        if package:
            pkg = self.catalog.package(package)
            amount, name = pkg.credits, pkg.name
            if expires_at is None:
                expires_at = now + PACKAGE_VALIDITY
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
        )

    def build_adjust(
        self, *, workspace_id: str, request_id: str, amount: int, reason: str, actor_id: str
    ) -> AdjustCmd:
        v = self._common(workspace_id, request_id, actor_id, {})
        if amount == 0:
            v.add("amount", "must not be zero")
        else:
            v.credits("amount", abs(amount))
        v.text("reason", reason, required=True)
        _raise(v)
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
        v = self._common(workspace_id, request_id, actor_id, {})
        v.id("charge_request_id", charge_request_id)
        v.credits("amount", amount)
        v.text("reason", reason)
        _raise(v)
        return RefundCmd(
            workspace_id,
            request_id,
            charge_request_id,
            amount,
            reason,
            actor_id,
            fingerprint("refund", charge_request_id, amount, reason, actor_id),
        )

    # Running commands.

    def submit(self, cmd: Command, done: Done[Outcome | errors.MeterError]) -> None:
        """Queue a command (for streams, which collect results as they come): `done` hears
        its outcome, its refusal or the failure of its batch."""
        self.batcher.submit_nowait(cmd, done)

    async def execute(self, cmd: Command) -> Outcome:
        """Run one command and return its outcome; raises its refusal."""
        result = await self.batcher.submit(cmd)
        if isinstance(result, errors.MeterError):
            raise self.explain(result)
        if isinstance(result, BaseException):
            raise result
        return result

    def explain(self, error: errors.MeterError) -> errors.MeterError:
        """Add what a caller needs to act on a refusal (the package that covers a shortfall)."""
        if error.reason == "INSUFFICIENT_CREDITS" and "suggested_package" not in error.metadata:
            pkg = self.catalog.suggest_package(int(error.metadata.get("shortfall", "0")))
            metadata = {**error.metadata, "suggested_package": pkg.name if pkg else ""}
            message = error.message + (f"; the {pkg.name} package covers it" if pkg else "")
            return replace(error, metadata=metadata, message=message)
        return error

    async def reserve(self, cmd: ReserveCmd, wait_s: float | None = None) -> HoldView:
        """Hold credits; with wait_s, wait that long for a grant that makes the balance suffice.

        Waiting holds no database connection: it sleeps on the workspace's change notices and
        tries again after each change of the balance. Only the first refusal is an alert event.
        """
        if not wait_s or self.funds is None:
            return _as(HoldView, await self.execute(cmd))
        loop = asyncio.get_running_loop()
        until = loop.time() + wait_s
        attempt = cmd
        with self.funds.changes(cmd.workspace_id) as changes:
            while True:
                try:
                    return _as(HoldView, await self.execute(attempt))
                except errors.MeterError as e:
                    if e.reason != "INSUFFICIENT_CREDITS":
                        raise
                    attempt = replace(cmd, alert=False)
                    while not changes.closed:
                        left = until - loop.time()
                        if left <= 0 or not await changes.wait(left):
                            raise
                        if changes.take()[0]:
                            break
                    else:
                        # The server is draining: not "insufficient" (a client would give up)
                        # but UNAVAILABLE, so it waits again on another replica.
                        raise errors.unavailable(
                            "the server is shutting down; wait for funds on another replica"
                        ) from e

    def build_set_thresholds(
        self, *, workspace_id: str, low: int, critical: int
    ) -> SetThresholdsCmd:
        """Raises: MeterError INVALID naming the field (0 <= critical <= low <= 10^12)."""
        v = Violations()
        v.id("workspace_id", workspace_id)
        v.credits("low", low)
        v.credits("critical", critical)
        if not v and critical > low:
            v.add("critical", f"must not exceed low ({low})")
        _raise(v)
        return SetThresholdsCmd(workspace_id, low, critical)

    async def set_thresholds(self, cmd: SetThresholdsCmd) -> BalanceView:
        return _as(BalanceView, await self.execute(cmd))

    async def commit(self, cmd: CommitCmd) -> CommitOutcome:
        return _as(CommitOutcome, await self.execute(cmd))

    async def release(self, cmd: ReleaseCmd) -> ReleaseOutcome:
        return _as(ReleaseOutcome, await self.execute(cmd))

    async def extend(self, cmd: ExtendCmd) -> HoldView:
        return _as(HoldView, await self.execute(cmd))

    async def charge(self, cmd: ChargeCmd) -> CommitOutcome:
        return _as(CommitOutcome, await self.execute(cmd))

    async def grant(self, cmd: GrantCmd) -> EntryOutcome:
        return _as(EntryOutcome, await self.execute(cmd))

    async def adjust(self, cmd: AdjustCmd) -> EntryOutcome:
        return _as(EntryOutcome, await self.execute(cmd))

    async def refund(self, cmd: RefundCmd) -> EntryOutcome:
        return _as(EntryOutcome, await self.execute(cmd))

    # Internals.

    def _common(
        self, workspace_id: str, request_id: str, actor_id: str, labels: Mapping[str, str]
    ) -> Violations:
        v = Violations()
        v.id("workspace_id", workspace_id)
        v.id("request_id", request_id)
        v.actor("actor_id", actor_id)
        v.labels("labels", labels)
        return v

    def _price(
        self, v: Violations, operation: str, usage: Usage | None, amount: int | None
    ) -> tuple[int, int]:
        """The credits to hold and the catalog version they were priced with."""
        if amount is not None:
            v.credits("amount", amount)
        elif not operation:
            v.add("operation", "required unless amount is given")
        _check_usage(v, usage)
        _raise(v)
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


def _check_usage(v: Violations, usage: Usage | None) -> None:
    if usage is not None:
        try:
            validate_usage(usage)
        except errors.MeterError as e:
            v.extend(e.violations)


def _raise(v: Sequence[errors.FieldViolation]) -> None:
    if v:
        raise errors.invalid(list(v))


def _as(kind: type[T], outcome: Outcome) -> T:
    assert isinstance(outcome, kind), outcome
    return outcome
