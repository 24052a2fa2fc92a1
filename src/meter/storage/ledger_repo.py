"""The ledger's storage: load workspaces' books, let the rules run, write back what changed.

One call of `apply` is one transaction for a whole batch of commands, whatever their
workspaces: the workspace rows are locked once each, in workspace_id order (every writer
takes them in that order, so batches cannot deadlock), the state the commands need is read in
three set-based statements, and everything written goes back in bulk.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Callable, Sequence
from datetime import datetime
from typing import Any

from sqlalchemy import bindparam, insert, text, update
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from meter import errors
from meter.ledger.book import Book, Pricer
from meter.ledger.model import (
    Account,
    AdjustCmd,
    ChargeCmd,
    Command,
    CommitCmd,
    Entry,
    EntryKind,
    ExtendCmd,
    GrantCmd,
    Hold,
    HoldKind,
    HoldState,
    Level,
    Lot,
    Outcome,
    RefundCmd,
    ReleaseCmd,
    ReserveCmd,
    SetThresholdsCmd,
    SweepCmd,
    SweepOutcome,
)
from meter.storage.db import translated
from meter.storage.tables import alerts, holds, journal, lots, workspaces

Result = Outcome | errors.MeterError

_LOCK = text(
    "SELECT now() AS now, w.* FROM workspaces w WHERE workspace_id = ANY(:ids)"
    " ORDER BY workspace_id FOR UPDATE"
)
_LOCK_SKIP = text(
    "SELECT now() AS now, w.* FROM workspaces w WHERE workspace_id = ANY(:ids)"
    " ORDER BY workspace_id FOR UPDATE SKIP LOCKED"
)
_CREATE = text(
    "INSERT INTO workspaces (workspace_id) SELECT unnest(CAST(:ids AS text[]))"
    " ORDER BY 1 ON CONFLICT DO NOTHING"
)
_NOW = text("SELECT now()")
# The holds and request entries that the batch's request ids name, in one round trip.
_BY_REQUEST = text(
    "SELECT h.* FROM unnest(CAST(:ws AS text[]), CAST(:rids AS text[]))"
    " AS r(ws, rid) JOIN holds h ON h.workspace_id = r.ws AND h.request_id = r.rid"
)
_ENTRIES_BY_REQUEST = text(
    "SELECT j.* FROM unnest(CAST(:ws AS text[]), CAST(:rids AS text[])) AS r(ws, rid)"
    " JOIN journal j ON j.workspace_id = r.ws AND j.request_id = r.rid AND j.kind IN (1, 4, 5)"
)
_OVERDUE = text(
    "SELECT h.* FROM holds h"
    " WHERE h.workspace_id = ANY(:ids) AND h.state = 1 AND h.expires_at <= :now"
)
_LOTS = text(
    "SELECT * FROM lots WHERE workspace_id = ANY(:ids) AND remaining > 0"
    " UNION SELECT l.* FROM unnest(CAST(:lws AS text[]), CAST(:lids AS bigint[])) AS n(ws, id)"
    " JOIN lots l ON l.workspace_id = n.ws AND l.lot_id = n.id"
)


class LedgerRepo:
    """Applies batches of ledger commands, one transaction per batch."""

    def __init__(self, engine: AsyncEngine) -> None:
        self.engine = engine

    async def apply(
        self,
        cmds: Sequence[Command],
        price: Pricer,
        *,
        skip_locked: bool = False,
        prepare: Callable[[set[int]], Any] | None = None,
    ) -> list[Result]:
        """Run commands in one transaction; each gets its outcome or its own refusal.

        Args:
            cmds: commands of any workspaces, in the order they are to be applied.
            price: prices a Commit's actual usage with a hold's catalog version.
            skip_locked: skip workspaces another transaction holds (the sweeper's mode).
            prepare: awaited with the catalog versions the loaded holds use, before pricing.
        """
        with translated():
            return await self._apply(cmds, price, skip_locked, prepare)

    async def _apply(
        self,
        cmds: Sequence[Command],
        price: Pricer,
        skip_locked: bool,
        prepare: Callable[[set[int]], Any] | None,
    ) -> list[Result]:
        async with self.engine.begin() as conn:
            books, now = await self._load(conn, cmds, skip_locked)
            if prepare is not None:
                await prepare({h.catalog_version for b in books.values() for h in b.holds.values()})
            results = [_run(books.get(cmd.workspace_id), cmd, price) for cmd in cmds]
            await self._write(conn, books, now)
        return results

    async def _load(
        self, conn: AsyncConnection, cmds: Sequence[Command], skip_locked: bool
    ) -> tuple[dict[str, Book], datetime]:
        ids = sorted({c.workspace_id for c in cmds})
        new = sorted({c.workspace_id for c in cmds if isinstance(c, GrantCmd)})
        if new:
            await conn.execute(_CREATE, {"ids": new})
        rows = (await conn.execute(_LOCK_SKIP if skip_locked else _LOCK, {"ids": ids})).all()
        if not rows:
            return {}, (await conn.execute(_NOW)).scalar_one()
        now: datetime = rows[0].now
        accounts = {r.workspace_id: _account(r) for r in rows}

        ws: list[str] = []
        rids: list[str] = []
        for c in cmds:
            if c.workspace_id in accounts and not isinstance(c, SweepCmd | SetThresholdsCmd):
                ws.append(c.workspace_id)
                rids.append(c.request_id)
                if isinstance(c, RefundCmd):
                    ws.append(c.workspace_id)
                    rids.append(c.charge_request_id)
        hold_rows: list[Any] = list(
            (await conn.execute(_BY_REQUEST, {"ws": ws, "rids": rids})).all()
        )
        entry_rows: Sequence[Any] = []
        if any(
            isinstance(c, GrantCmd | AdjustCmd | RefundCmd | ReserveCmd | ChargeCmd) for c in cmds
        ):
            entry_rows = (await conn.execute(_ENTRIES_BY_REQUEST, {"ws": ws, "rids": rids})).all()
        sweep = [
            c.workspace_id for c in cmds if isinstance(c, SweepCmd) and c.workspace_id in accounts
        ]
        if sweep:
            hold_rows += list((await conn.execute(_OVERDUE, {"ids": sweep, "now": now})).all())

        ws_holds: dict[str, dict[str, Hold]] = defaultdict(dict)
        lws: list[str] = []
        lids: list[int] = []
        for r in hold_rows:
            hold = _hold(r)
            ws_holds[r.workspace_id][hold.request_id] = hold
            for lot_id in r.draw_lots:
                lws.append(r.workspace_id)
                lids.append(lot_id)
        ws_lots: dict[str, list[Lot]] = defaultdict(list)
        for r in (
            await conn.execute(_LOTS, {"ids": list(accounts), "lws": lws, "lids": lids})
        ).all():
            ws_lots[r.workspace_id].append(_lot(r))
        ws_entries: dict[str, dict[str, Entry]] = defaultdict(dict)
        for r in entry_rows:
            ws_entries[r.workspace_id][r.request_id] = _entry(r)

        books = {}
        for wid, account in accounts.items():
            book = Book(account, ws_lots[wid], ws_holds[wid], ws_entries[wid], now)
            if account.next_expiry_at is not None and account.next_expiry_at <= now:
                book.expire_lots()
            books[wid] = book
        return books, now

    async def _write(self, conn: AsyncConnection, books: dict[str, Book], now: datetime) -> None:
        new_holds: list[dict[str, Any]] = []
        dirty_holds: list[dict[str, Any]] = []
        new_lots: list[dict[str, Any]] = []
        dirty_lots: list[dict[str, Any]] = []
        entries: list[dict[str, Any]] = []
        alert_rows: list[dict[str, Any]] = []
        accounts: list[dict[str, Any]] = []
        for wid, book in books.items():
            book.finish()
            if not book.account_dirty and not book.dirty_holds:
                continue
            new_holds += [_hold_row(wid, h) for h in book.new_holds]
            dirty_holds += [_hold_update(wid, h) for h in book.dirty_holds.values()]
            new_lots += [_lot_row(wid, lot) for lot in book.new_lots]
            dirty_lots += [
                {"b_ws": wid, "b_id": i, "remaining": book.lots[i].remaining}
                for i in book.dirty_lots
            ]
            entries += [_entry_row(wid, e) for e in book.entries]
            alert_rows += [
                {
                    "workspace_id": wid,
                    "event_id": a.event_id,
                    "kind": int(a.kind),
                    "available": a.available,
                    "threshold": a.threshold,
                    "required": a.required,
                    "operation": a.operation,
                    "request_id": a.request_id,
                    "created_at": a.created_at,
                }
                for a in book.alerts
            ]
            if book.account_dirty:
                accounts.append(_account_update(book.account, now))
        if new_lots:
            await conn.execute(insert(lots), new_lots)
        if dirty_lots:
            await conn.execute(_UPDATE_LOT, dirty_lots)
        if new_holds:
            await conn.execute(insert(holds), new_holds)
        if dirty_holds:
            await conn.execute(_UPDATE_HOLD, dirty_holds)
        if entries:
            await conn.execute(insert(journal), entries)
        if alert_rows:
            await conn.execute(insert(alerts), alert_rows)
        if accounts:
            await conn.execute(_UPDATE_ACCOUNT, accounts)


def _run(book: Book | None, cmd: Command, price: Pricer) -> Result:
    """Apply one command to its workspace's book; a refusal is its result, not an exception."""
    if book is None:
        if isinstance(cmd, SweepCmd):
            return SweepOutcome(0, 0)
        return errors.workspace_not_found(cmd.workspace_id)
    try:
        match cmd:
            case ReserveCmd():
                return book.reserve(cmd)
            case CommitCmd():
                return book.commit(cmd, price)
            case ReleaseCmd():
                return book.release(cmd)
            case ExtendCmd():
                return book.extend(cmd)
            case ChargeCmd():
                return book.charge(cmd)
            case GrantCmd():
                return book.grant(cmd)
            case AdjustCmd():
                return book.adjust(cmd)
            case RefundCmd():
                return book.refund(cmd)
            case SetThresholdsCmd():
                return book.set_thresholds(cmd)
            case SweepCmd():
                return book.sweep()
    except errors.MeterError as e:
        return e
    raise AssertionError(f"unknown command {cmd!r}")


# Rows <-> domain.


def _account(r: Any) -> Account:
    return Account(
        workspace_id=r.workspace_id,
        balance=r.balance,
        held=r.held,
        lifetime_used=r.lifetime_used,
        lifetime_granted=r.lifetime_granted,
        low_threshold=r.low_threshold,
        critical_threshold=r.critical_threshold,
        alert_level=Level(r.alert_level),
        hold_seq=r.hold_seq,
        lot_seq=r.lot_seq,
        entry_seq=r.entry_seq,
        alert_seq=r.alert_seq,
        next_expiry_at=r.next_expiry_at,
        last_entry_at=r.last_entry_at,
        last_entry_kind=EntryKind(r.last_entry_kind) if r.last_entry_kind else None,
        last_entry_amount=r.last_entry_amount,
        last_entry_operation=r.last_entry_operation,
        created_at=r.created_at,
    )


def _account_update(a: Account, now: datetime) -> dict[str, Any]:
    return {
        "b_ws": a.workspace_id,
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
        "updated_at": now,
    }


_UPDATE_ACCOUNT = (
    update(workspaces)
    .where(workspaces.c.workspace_id == bindparam("b_ws"))
    .values(
        {
            c: bindparam(c)
            for c in (
                "balance",
                "held",
                "lifetime_used",
                "lifetime_granted",
                "low_threshold",
                "critical_threshold",
                "alert_level",
                "hold_seq",
                "lot_seq",
                "entry_seq",
                "alert_seq",
                "next_expiry_at",
                "last_entry_at",
                "last_entry_kind",
                "last_entry_amount",
                "last_entry_operation",
                "updated_at",
            )
        }
    )
)
_UPDATE_LOT = (
    update(lots)
    .where(lots.c.workspace_id == bindparam("b_ws"), lots.c.lot_id == bindparam("b_id"))
    .values(remaining=bindparam("remaining"))
)
_HOLD_MUTABLE = (
    "state",
    "charged",
    "shortfall",
    "refunded",
    "late",
    "labels",
    "draw_lots",
    "draw_amounts",
    "commit_fingerprint",
    "expires_at",
    "finished_at",
)
_UPDATE_HOLD = (
    update(holds)
    .where(holds.c.workspace_id == bindparam("b_ws"), holds.c.hold_id == bindparam("b_id"))
    .values({c: bindparam(c, type_=holds.c[c].type) for c in _HOLD_MUTABLE})
)


def _lot(r: Any) -> Lot:
    return Lot(
        lot_id=r.lot_id,
        request_id=r.request_id,
        amount=r.amount,
        remaining=r.remaining,
        expires_at=r.expires_at,
        source=r.source,
        package=r.package,
        created_at=r.created_at,
    )


def _lot_row(wid: str, lot: Lot) -> dict[str, Any]:
    return {
        "workspace_id": wid,
        "lot_id": lot.lot_id,
        "request_id": lot.request_id,
        "amount": lot.amount,
        "remaining": lot.remaining,
        "expires_at": lot.expires_at,
        "source": lot.source,
        "package": lot.package,
        "created_at": lot.created_at,
    }


def _hold(r: Any) -> Hold:
    return Hold(
        hold_id=r.hold_id,
        request_id=r.request_id,
        kind=HoldKind(r.kind),
        state=HoldState(r.state),
        amount=r.amount,
        operation=r.operation,
        catalog_version=r.catalog_version,
        actor_id=r.actor_id,
        labels=r.labels or {},
        draws=[[lot, credits] for lot, credits in zip(r.draw_lots, r.draw_amounts, strict=True)],
        fingerprint=r.fingerprint,
        expires_at=r.expires_at,
        created_at=r.created_at,
        charged=r.charged,
        shortfall=r.shortfall,
        refunded=r.refunded,
        late=r.late,
        commit_fingerprint=r.commit_fingerprint,
        finished_at=r.finished_at,
    )


def _hold_mutable(h: Hold) -> dict[str, Any]:
    return {
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


def _hold_row(wid: str, h: Hold) -> dict[str, Any]:
    return {
        "workspace_id": wid,
        "hold_id": h.hold_id,
        "request_id": h.request_id,
        "kind": int(h.kind),
        "amount": h.amount,
        "operation": h.operation,
        "catalog_version": h.catalog_version,
        "actor_id": h.actor_id,
        "fingerprint": h.fingerprint,
        "created_at": h.created_at,
        **_hold_mutable(h),
    }


def _hold_update(wid: str, h: Hold) -> dict[str, Any]:
    return {"b_ws": wid, "b_id": h.hold_id, **_hold_mutable(h)}


def _entry(r: Any) -> Entry:
    return Entry(
        entry_id=r.entry_id,
        kind=EntryKind(r.kind),
        amount=r.amount,
        balance_after=r.balance_after,
        created_at=r.created_at,
        operation=r.operation,
        actor_id=r.actor_id,
        request_id=r.request_id,
        labels=r.labels or {},
        shortfall=r.shortfall,
        late=r.late,
        reason=r.reason,
        package=r.package,
        fingerprint=r.fingerprint,
    )


def _entry_row(wid: str, e: Entry) -> dict[str, Any]:
    return {
        "workspace_id": wid,
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
