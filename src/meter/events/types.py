"""Event types of the outbox (DESIGN.md §9) and the pieces of their `data` objects.

A consumer acts on an event without a second call: every event's data carries the
workspace's balance after the change, and the fields of the lot, hold or entry it is about.
"""

from __future__ import annotations

from typing import Any

from meter.ledger.model import Account, AlertKind, Hold, Level, Lot, level_of

BALANCE_LOW = "balance.low"
BALANCE_CRITICAL = "balance.critical"
BALANCE_DEPLETED = "balance.depleted"
BALANCE_RECOVERED = "balance.recovered"
CREDITS_GRANTED = "credits.granted"
CREDITS_EXPIRING = "credits.expiring"
CREDITS_EXPIRED = "credits.expired"
CREDITS_REFUNDED = "credits.refunded"
CREDITS_ADJUSTED = "credits.adjusted"
HOLD_EXPIRED = "hold.expired"
RESERVATION_REFUSED = "reservation.refused"
COMMIT_SHORTFALL = "commit.shortfall"
MEMBER_LIMIT_REACHED = "member.limit_reached"
BUDGET_THRESHOLD = "budget.threshold"
BUDGET_EXCEEDED = "budget.exceeded"
BALANCE_RUNWAY_LOW = "balance.runway_low"
TOPUP_REQUESTED = "topup.requested"
TOPUP_FAILED = "topup.failed"
TOPUP_DISABLED = "topup.disabled"
GRANT_PENDING = "grant.pending"
GRANT_CONFIRMED = "grant.confirmed"
GRANT_VOIDED = "grant.voided"
CATALOG_PUBLISHED = "catalog.published"
WEBHOOK_ENDPOINT_DISABLED = "webhook.endpoint_disabled"
# Sent by SendTestEvent only; never stored.
WEBHOOK_TEST = "webhook.test"

# Every type of the contract, in DESIGN.md's order.
TYPES = (
    BALANCE_LOW,
    BALANCE_CRITICAL,
    BALANCE_DEPLETED,
    BALANCE_RECOVERED,
    CREDITS_GRANTED,
    CREDITS_EXPIRING,
    CREDITS_EXPIRED,
    CREDITS_REFUNDED,
    CREDITS_ADJUSTED,
    HOLD_EXPIRED,
    RESERVATION_REFUSED,
    COMMIT_SHORTFALL,
    MEMBER_LIMIT_REACHED,
    BUDGET_THRESHOLD,
    BUDGET_EXCEEDED,
    BALANCE_RUNWAY_LOW,
    TOPUP_REQUESTED,
    TOPUP_FAILED,
    TOPUP_DISABLED,
    GRANT_PENDING,
    GRANT_CONFIRMED,
    GRANT_VOIDED,
    CATALOG_PUBLISHED,
    WEBHOOK_ENDPOINT_DISABLED,
)
KNOWN = frozenset(TYPES)

ALERT_TYPES = {AlertKind.LOW: BALANCE_LOW, AlertKind.CRITICAL: BALANCE_CRITICAL}

_LEVELS = {Level.OK: "ok", Level.LOW: "low", Level.CRITICAL: "critical"}


def balance(a: Account) -> dict[str, Any]:
    level = level_of(a.available, a.low_threshold, a.critical_threshold)
    return {
        "available": a.available,
        "held": a.held,
        "level": _LEVELS[level],
        "lifetime_used": a.lifetime_used,
        "lifetime_granted": a.lifetime_granted,
    }


def lot(lt: Lot) -> dict[str, Any]:
    return {
        "lot_id": str(lt.lot_id),
        "amount": lt.amount,
        "remaining": lt.remaining,
        "expires_at": lt.expires_at,
        "source": lt.source,
        "package": lt.package,
        "request_id": lt.request_id,
        "category": lt.category.name.lower(),
        "priority": lt.priority,
        "state": lt.state.name.lower(),
    }


def hold(h: Hold) -> dict[str, Any]:
    return {
        "hold_id": str(h.hold_id),
        "request_id": h.request_id,
        "amount": h.amount,
        "state": h.state.name.lower(),
        "operation": h.operation,
        "actor_id": h.actor_id,
        "labels": dict(h.labels),
        "expires_at": h.expires_at,
        "created_at": h.created_at,
    }
