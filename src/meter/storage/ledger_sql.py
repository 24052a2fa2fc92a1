"""The ledger's hot path in SQL: one statement reads a batch's state, one writes its changes.

The statements call the functions of migration 0002 (meter_load, meter_write). Rows travel as
JSON objects keyed by column name; these builders and parsers are the only place that knows
how a domain object maps to its row.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

import orjson

from meter.ledger.model import (
    Account,
    AlertEvent,
    Entry,
    EntryKind,
    Hold,
    HoldKind,
    HoldState,
    Level,
    Lot,
)

COMMIT = "COMMIT"


def load(request: Any) -> str:
    """Open the batch's transaction and read its state, in one round trip."""
    return f"BEGIN; SELECT meter_load({_literal(request)}::jsonb)::text"


def write(doc: Any) -> str:
    """Write the batch's changes and commit, in one round trip."""
    return f"SELECT meter_write({_literal(doc)}::jsonb); COMMIT"


def _literal(doc: Any) -> str:
    """A JSON document as an SQL string literal.

    Several statements go in one message only without parameters (simple query protocol),
    so the document is inlined: quotes doubled, which is all a literal needs under
    standard_conforming_strings (set on every ledger connection, see db.ledger_pool).
    """
    # orjson writes datetimes as RFC 3339, which timestamptz parses.
    return "'" + orjson.dumps(doc).decode().replace("'", "''") + "'"


Row = Any  # a mapping: a JSON object from meter_load, or a driver row._mapping


loads = orjson.loads


def dt(value: Any) -> datetime:
    """A timestamp from a JSON document (ISO text) or a driver row (datetime)."""
    return datetime.fromisoformat(value) if isinstance(value, str) else value  # type: ignore[no-any-return]


def opt_dt(value: Any) -> datetime | None:
    return None if value is None else dt(value)


# Rows -> domain.


def account(r: Row) -> Account:
    return Account(
        workspace_id=r["workspace_id"],
        balance=r["balance"],
        held=r["held"],
        lifetime_used=r["lifetime_used"],
        lifetime_granted=r["lifetime_granted"],
        low_threshold=r["low_threshold"],
        critical_threshold=r["critical_threshold"],
        alert_level=Level(r["alert_level"]),
        hold_seq=r["hold_seq"],
        lot_seq=r["lot_seq"],
        entry_seq=r["entry_seq"],
        alert_seq=r["alert_seq"],
        next_expiry_at=opt_dt(r["next_expiry_at"]),
        last_entry_at=opt_dt(r["last_entry_at"]),
        last_entry_kind=EntryKind(r["last_entry_kind"]) if r["last_entry_kind"] else None,
        last_entry_amount=r["last_entry_amount"],
        last_entry_operation=r["last_entry_operation"],
        created_at=opt_dt(r["created_at"]),
    )


def lot(r: Row) -> Lot:
    return Lot(
        lot_id=r["lot_id"],
        request_id=r["request_id"],
        amount=r["amount"],
        remaining=r["remaining"],
        expires_at=opt_dt(r["expires_at"]),
        source=r["source"],
        package=r["package"],
        created_at=dt(r["created_at"]),
    )


def hold(r: Row) -> Hold:
    return Hold(
        hold_id=r["hold_id"],
        request_id=r["request_id"],
        kind=HoldKind(r["kind"]),
        state=HoldState(r["state"]),
        amount=r["amount"],
        operation=r["operation"],
        catalog_version=r["catalog_version"],
        actor_id=r["actor_id"],
        labels=dict(r["labels"] or {}),
        draws=[[a, b] for a, b in zip(r["draw_lots"], r["draw_amounts"], strict=True)],
        fingerprint=r["fingerprint"],
        expires_at=dt(r["expires_at"]),
        created_at=dt(r["created_at"]),
        charged=r["charged"],
        shortfall=r["shortfall"],
        refunded=r["refunded"],
        late=r["late"],
        commit_fingerprint=r["commit_fingerprint"],
        finished_at=opt_dt(r["finished_at"]),
    )


def entry(r: Row) -> Entry:
    return Entry(
        entry_id=r["entry_id"],
        kind=EntryKind(r["kind"]),
        amount=r["amount"],
        balance_after=r["balance_after"],
        created_at=dt(r["created_at"]),
        operation=r["operation"],
        actor_id=r["actor_id"],
        request_id=r["request_id"],
        labels=dict(r["labels"] or {}),
        shortfall=r["shortfall"],
        late=r["late"],
        reason=r["reason"],
        package=r["package"],
        fingerprint=r["fingerprint"],
    )


# Domain -> rows.


def hold_row(ws: str, h: Hold) -> dict[str, Any]:
    return {
        "workspace_id": ws,
        "hold_id": h.hold_id,
        "request_id": h.request_id,
        "kind": int(h.kind),
        "state": int(h.state),
        "amount": h.amount,
        "charged": h.charged,
        "shortfall": h.shortfall,
        "refunded": h.refunded,
        "late": h.late,
        "operation": h.operation,
        "catalog_version": h.catalog_version,
        "actor_id": h.actor_id,
        "labels": h.labels or None,
        "draw_lots": [d[0] for d in h.draws],
        "draw_amounts": [d[1] for d in h.draws],
        "fingerprint": h.fingerprint,
        "commit_fingerprint": h.commit_fingerprint,
        "expires_at": h.expires_at,
        "created_at": h.created_at,
        "finished_at": h.finished_at,
    }


def hold_update_row(ws: str, h: Hold) -> dict[str, Any]:
    """The columns meter_write's UPDATE of holds sets, and the key."""
    return {
        "workspace_id": ws,
        "hold_id": h.hold_id,
        "state": int(h.state),
        "charged": h.charged,
        "shortfall": h.shortfall,
        "refunded": h.refunded,
        "late": h.late,
        "labels": h.labels or None,
        "draw_lots": [d[0] for d in h.draws],
        "draw_amounts": [d[1] for d in h.draws],
        "commit_fingerprint": h.commit_fingerprint,
        "expires_at": h.expires_at,
        "finished_at": h.finished_at,
    }


def lot_row(ws: str, lt: Lot) -> dict[str, Any]:
    return {
        "workspace_id": ws,
        "lot_id": lt.lot_id,
        "request_id": lt.request_id,
        "amount": lt.amount,
        "remaining": lt.remaining,
        "expires_at": lt.expires_at,
        "source": lt.source,
        "package": lt.package,
        "created_at": lt.created_at,
    }


def entry_row(ws: str, e: Entry) -> dict[str, Any]:
    return {
        "workspace_id": ws,
        "entry_id": e.entry_id,
        "kind": int(e.kind),
        "amount": e.amount,
        "balance_after": e.balance_after,
        "operation": e.operation,
        "actor_id": e.actor_id,
        "request_id": e.request_id,
        "labels": dict(e.labels) or None,
        "shortfall": e.shortfall,
        "late": e.late,
        "reason": e.reason,
        "package": e.package,
        "fingerprint": e.fingerprint,
        "created_at": e.created_at,
    }


def alert_row(ws: str, a: AlertEvent) -> dict[str, Any]:
    return {
        "workspace_id": ws,
        "event_id": a.event_id,
        "kind": int(a.kind),
        "available": a.available,
        "threshold": a.threshold,
        "required": a.required,
        "operation": a.operation,
        "request_id": a.request_id,
        "created_at": a.created_at,
    }


def workspace_row(a: Account) -> dict[str, Any]:
    return {
        "workspace_id": a.workspace_id,
        "balance": a.balance,
        "held": a.held,
        "lifetime_used": a.lifetime_used,
        "lifetime_granted": a.lifetime_granted,
        "low_threshold": a.low_threshold,
        "critical_threshold": a.critical_threshold,
        "alert_level": int(a.alert_level),
        "hold_seq": a.hold_seq,
        "lot_seq": a.lot_seq,
        "entry_seq": a.entry_seq,
        "alert_seq": a.alert_seq,
        "next_expiry_at": a.next_expiry_at,
        "last_entry_at": a.last_entry_at,
        "last_entry_kind": int(a.last_entry_kind) if a.last_entry_kind else None,
        "last_entry_amount": a.last_entry_amount,
        "last_entry_operation": a.last_entry_operation,
    }
