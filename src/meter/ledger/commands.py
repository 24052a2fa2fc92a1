"""Ledger commands: validated, priced requests, ready for a workspace's book.

The service builds them from requests (meter.ledger.service), the batcher queues them, and
the book applies them under the workspace's lock; what each produces is in meter.ledger.model.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta

from meter.catalog.model import Usage
from meter.ledger.model import DEFAULT_PRIORITY, Category


@dataclass(frozen=True, slots=True)
class ReserveCmd:
    workspace_id: str
    request_id: str
    amount: int
    operation: str
    catalog_version: int
    actor_id: str
    labels: Mapping[str, str]
    ttl_s: float
    fingerprint: str
    # False for a waiting Reserve's retries: its first refusal was the alert event, and each
    # retry's alert would otherwise wake the same wait again (an alert per notice).
    alert: bool = True


@dataclass(frozen=True, slots=True)
class CommitCmd:
    workspace_id: str
    request_id: str
    amount: int | None  # explicit actual credits
    usage: Usage | None  # priced with the hold's catalog version
    labels: Mapping[str, str]
    fingerprint: str


@dataclass(frozen=True, slots=True)
class ReleaseCmd:
    workspace_id: str
    request_id: str


@dataclass(frozen=True, slots=True)
class ExtendCmd:
    workspace_id: str
    request_id: str
    ttl_s: float


@dataclass(frozen=True, slots=True)
class ChargeCmd:
    workspace_id: str
    request_id: str
    amount: int
    operation: str
    catalog_version: int
    actor_id: str
    labels: Mapping[str, str]
    fingerprint: str


@dataclass(frozen=True, slots=True)
class GrantCmd:
    workspace_id: str
    request_id: str
    amount: int
    expires_at: datetime | None
    source: str
    package: str
    actor_id: str
    labels: Mapping[str, str]
    fingerprint: str
    category: Category = Category.PAID
    priority: int = DEFAULT_PRIORITY
    pending: bool = False  # not spendable until ConfirmGrant
    # Without expires_at, the lot expires this long after it is granted (by the ledger's
    # clock): a package's validity.
    expires_in: timedelta | None = None


@dataclass(frozen=True, slots=True)
class ConfirmGrantCmd:
    """Make a pending grant spendable (idempotent: a confirmed grant confirms again)."""

    workspace_id: str
    request_id: str  # the grant's
    actor_id: str


@dataclass(frozen=True, slots=True)
class VoidGrantCmd:
    """Remove a pending grant (idempotent: a voided grant voids again)."""

    workspace_id: str
    request_id: str  # the grant's
    reason: str
    actor_id: str


@dataclass(frozen=True, slots=True)
class SetAutoTopUpCmd:
    """Set a workspace's auto top-up rule (idempotent by nature: it names the end state)."""

    workspace_id: str
    enabled: bool
    threshold: int
    package: str
    amount: int
    monthly_limit: int


@dataclass(frozen=True, slots=True)
class ReportTopUpFailedCmd:
    """The payment for a top-up request failed (idempotent for the last failed request)."""

    workspace_id: str
    request_id: str
    reason: str


@dataclass(frozen=True, slots=True)
class AdjustCmd:
    workspace_id: str
    request_id: str
    amount: int
    reason: str
    actor_id: str
    fingerprint: str


@dataclass(frozen=True, slots=True)
class RefundCmd:
    workspace_id: str
    request_id: str
    charge_request_id: str
    amount: int  # 0 = all that is left
    reason: str
    actor_id: str
    fingerprint: str


@dataclass(frozen=True, slots=True)
class SetThresholdsCmd:
    """Set a workspace's alert thresholds (idempotent by nature: it names the end state)."""

    workspace_id: str
    low: int
    critical: int
    runway_days: int | None = None  # None: as it is


@dataclass(frozen=True, slots=True)
class SweepCmd:
    """Expire a workspace's overdue holds and lots (the sweeper's work)."""

    workspace_id: str


Command = (
    ReserveCmd
    | CommitCmd
    | ReleaseCmd
    | ExtendCmd
    | ChargeCmd
    | GrantCmd
    | AdjustCmd
    | RefundCmd
    | SetThresholdsCmd
    | SweepCmd
    | ConfirmGrantCmd
    | VoidGrantCmd
    | SetAutoTopUpCmd
    | ReportTopUpFailedCmd
)
