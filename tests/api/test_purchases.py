"""Purchases and expiry: packages, burn order, expiring lots, holds that outlive them, refunds."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import grpc

from meterpb.v1 import meter_pb2 as pb
from tests.support import balance, eventually, fails, grant, rid


def ts(dt: datetime) -> Any:
    from google.protobuf.timestamp_pb2 import Timestamp

    t = Timestamp()
    t.FromDatetime(dt)
    return t


def in_days(days: float) -> Any:
    return ts(datetime.now(UTC) + timedelta(days=days))


async def charge(stub: Any, ws: str, amount: int, job: str | None = None) -> pb.ChargeResponse:
    return await stub.Charge(
        pb.ChargeRequest(
            workspace_id=ws, request_id=job or rid(), operation="content.optimize", amount=amount
        )
    )


def remaining(db: Any, ws: str) -> dict[int, int]:
    return {
        r.lot_id: r.remaining
        for r in db.rows("SELECT lot_id, remaining FROM lots WHERE workspace_id = :w", w=ws)
    }


def expire_now(db: Any, ws: str, lot_id: str) -> None:
    """Move a lot's expiry into the past, as months passing would (the sweeper does the rest)."""
    db.execute(
        "UPDATE lots SET expires_at = now() - interval '1 second'"
        " WHERE workspace_id = :w AND lot_id = :l",
        w=ws,
        l=int(lot_id),
    )
    db.execute(
        "UPDATE workspaces SET next_expiry_at = now() - interval '1 second'"
        " WHERE workspace_id = :w",
        w=ws,
    )


async def entries(stub: Any, ws: str, *kinds: int) -> list[pb.JournalEntry]:
    found = await stub.ListTransactions(
        pb.ListTransactionsRequest(workspace_id=ws, kinds=kinds, page_size=1000)
    )
    return list(found.entries)


async def audit_is_clean(stub: Any, ws: str) -> None:
    report = await stub.Audit(pb.AuditRequest(workspace_id=ws))
    assert [] == list(report.discrepancies)


async def test_a_package_grant_adds_its_credits_for_twelve_months(stub, ws):
    got = await stub.GrantCredits(
        pb.GrantCreditsRequest(workspace_id=ws, request_id=rid("pay"), package="popular")
    )

    assert (550, "Popular", "purchase") == (got.entry.amount, got.entry.package, got.entry.reason)
    expires = got.lot.expires_at.ToDatetime(tzinfo=UTC)
    assert abs(expires - (datetime.now(UTC) + timedelta(days=365))) < timedelta(minutes=5)
    assert (550, "Popular") == (got.lot.amount, got.lot.package)
    assert 550 == got.balance.available


async def test_a_grant_replayed_with_its_payment_id_adds_nothing(stub, ws):
    request = pb.GrantCreditsRequest(workspace_id=ws, request_id=rid("pay"), package="Starter")
    first = await stub.GrantCredits(request)

    again = await stub.GrantCredits(request)

    assert first.entry == again.entry
    assert 100 == (await balance(stub, ws)).available
    other = pb.GrantCreditsRequest(workspace_id=ws, request_id=request.request_id, package="Pro")
    f = await fails(stub.GrantCredits(other))
    assert (grpc.StatusCode.INVALID_ARGUMENT, "REQUEST_ID_REUSED") == (f.code, f.reason)
    assert 100 == (await balance(stub, ws)).available


async def test_an_unknown_package_is_not_found(stub, ws):
    f = await fails(
        stub.GrantCredits(
            pb.GrantCreditsRequest(workspace_id=ws, request_id=rid("pay"), package="Mega")
        )
    )
    assert (grpc.StatusCode.NOT_FOUND, "PACKAGE_NOT_FOUND") == (f.code, f.reason)


async def test_credits_burn_earliest_expiry_first_then_oldest_and_never_expiring_last(stub, db, ws):
    forever = (await grant(stub, ws, 50)).lot.lot_id
    later = (await grant(stub, ws, 50, expires_at=in_days(60))).lot.lot_id
    older_soon = (await grant(stub, ws, 30, expires_at=in_days(10))).lot.lot_id
    newer_soon = (await grant(stub, ws, 30, expires_at=in_days(10))).lot.lot_id
    db.execute(
        "UPDATE lots SET expires_at = (SELECT expires_at FROM lots WHERE workspace_id = :w"
        " AND lot_id = :a) WHERE workspace_id = :w AND lot_id = :b",
        w=ws,
        a=int(older_soon),
        b=int(newer_soon),
    )

    await charge(stub, ws, 80)

    assert {
        int(older_soon): 0,
        int(newer_soon): 0,
        int(later): 30,
        int(forever): 50,
    } == remaining(db, ws)


async def test_a_partly_used_lot_expires_through_an_expire_entry(stub, db, ws):
    lot = (await grant(stub, ws, 100, expires_at=in_days(20))).lot.lot_id
    await grant(stub, ws, 20)
    await charge(stub, ws, 30)

    expire_now(db, ws, lot)

    await eventually(lambda: entries(stub, ws, pb.ENTRY_KIND_EXPIRE), within=5)
    (expired,) = await entries(stub, ws, pb.ENTRY_KIND_EXPIRE)
    assert (-70, 20) == (expired.amount, expired.balance_after)
    b = await balance(stub, ws)
    assert (20, 0, 0) == (b.available, b.held, b.expiring_soon.credits)
    await audit_is_clean(stub, ws)


async def test_a_lot_that_expires_in_a_moment_leaves_the_balance_on_its_own(stub, ws):
    await grant(stub, ws, 10)
    await grant(stub, ws, 40, expires_at=ts(datetime.now(UTC) + timedelta(seconds=1)))
    assert 50 == (await balance(stub, ws)).available

    async def expired() -> bool:
        return (await balance(stub, ws)).available == 10

    await eventually(expired, within=5)
    assert [-40] == [e.amount for e in await entries(stub, ws, pb.ENTRY_KIND_EXPIRE)]


async def test_a_hold_keeps_credits_of_a_lot_that_expires_and_what_it_gives_back_expires(
    stub, db, ws
):
    lot = (await grant(stub, ws, 100, expires_at=in_days(20))).lot.lot_id
    await grant(stub, ws, 20)
    job = rid()
    await stub.Reserve(pb.ReserveRequest(workspace_id=ws, request_id=job, amount=60))

    expire_now(db, ws, lot)
    await eventually(lambda: entries(stub, ws, pb.ENTRY_KIND_EXPIRE), within=5)
    b = await balance(stub, ws)
    assert (20, 60) == (b.available, b.held)  # the lot's other 40 expired, the hold kept 60

    done = await stub.Commit(pb.CommitRequest(workspace_id=ws, request_id=job, amount=25))

    assert (25, 35) == (done.charged, done.released)
    b = await balance(stub, ws)
    assert (20, 0) == (b.available, b.held)  # the 35 given back expired at once
    assert [-35, -40] == [e.amount for e in await entries(stub, ws, pb.ENTRY_KIND_EXPIRE)]
    await audit_is_clean(stub, ws)


async def test_a_released_hold_gives_back_to_an_expired_lot_and_that_expires_at_once(stub, db, ws):
    lot = (await grant(stub, ws, 50, expires_at=in_days(20))).lot.lot_id
    job = rid()
    await stub.Reserve(pb.ReserveRequest(workspace_id=ws, request_id=job, amount=50))
    expire_now(db, ws, lot)

    await stub.Release(pb.ReleaseRequest(workspace_id=ws, request_id=job))

    b = await balance(stub, ws)
    assert (0, 0) == (b.available, b.held)
    assert [-50] == [e.amount for e in await entries(stub, ws, pb.ENTRY_KIND_EXPIRE)]
    await audit_is_clean(stub, ws)


async def test_insufficient_credits_name_the_smallest_package_covering_the_shortfall(stub, ws):
    await grant(stub, ws, 10)

    f = await fails(charge(stub, ws, 120))

    assert (grpc.StatusCode.FAILED_PRECONDITION, "INSUFFICIENT_CREDITS") == (f.code, f.reason)
    assert {"required": "120", "available": "10", "shortfall": "110"}.items() <= f.metadata.items()
    assert "Basic" == f.metadata["suggested_package"]
    assert "Basic" in f.message


async def test_a_shortfall_beyond_every_package_suggests_none(stub, ws):
    await grant(stub, ws, 10)
    f = await fails(charge(stub, ws, 5000))
    assert ("INSUFFICIENT_CREDITS", "") == (f.reason, f.metadata["suggested_package"])


async def test_the_balance_shows_credits_expiring_within_thirty_days(stub, ws):
    soon = datetime.now(UTC).replace(microsecond=0) + timedelta(days=10)
    await grant(stub, ws, 30, expires_at=ts(soon))
    await grant(stub, ws, 25, expires_at=in_days(25))
    await stub.GrantCredits(
        pb.GrantCreditsRequest(workspace_id=ws, request_id=rid("pay"), package="Starter")
    )

    b = await balance(stub, ws)

    assert (155, 55) == (b.available, b.expiring_soon.credits)
    assert soon == b.expiring_soon.earliest.ToDatetime(tzinfo=UTC)


async def test_a_refund_gives_back_part_then_the_rest_of_a_charge_and_never_more(stub, ws):
    await grant(stub, ws, 100)
    job = rid()
    await charge(stub, ws, 10, job)
    first = pb.RefundRequest(
        workspace_id=ws, request_id=rid("refund"), charge_request_id=job, amount=4, reason="bad"
    )

    part = await stub.Refund(first)
    replay = await stub.Refund(first)
    rest = await stub.Refund(
        pb.RefundRequest(workspace_id=ws, request_id=rid("refund"), charge_request_id=job)
    )
    more = await fails(
        stub.Refund(
            pb.RefundRequest(
                workspace_id=ws, request_id=rid("refund"), charge_request_id=job, amount=1
            )
        )
    )

    assert (4, pb.ENTRY_KIND_REFUND) == (part.refunded, part.entry.kind)
    assert part.entry == replay.entry
    assert 6 == rest.refunded
    assert (grpc.StatusCode.FAILED_PRECONDITION, "REFUND_EXCEEDS_CHARGE") == (
        more.code,
        more.reason,
    )
    b = await balance(stub, ws)
    assert (100, 0) == (b.available, b.lifetime_used)
    await audit_is_clean(stub, ws)


async def test_a_refund_request_id_reused_for_another_amount_is_refused(stub, ws):
    await grant(stub, ws, 100)
    job = rid()
    await charge(stub, ws, 10, job)
    refund_id = rid("refund")
    await stub.Refund(
        pb.RefundRequest(workspace_id=ws, request_id=refund_id, charge_request_id=job, amount=2)
    )

    f = await fails(
        stub.Refund(
            pb.RefundRequest(workspace_id=ws, request_id=refund_id, charge_request_id=job, amount=3)
        )
    )

    assert (grpc.StatusCode.INVALID_ARGUMENT, "REQUEST_ID_REUSED") == (f.code, f.reason)
    assert 92 == (await balance(stub, ws)).available


async def test_a_refund_to_an_expired_lot_expires_at_once(stub, db, ws):
    lot = (await grant(stub, ws, 50, expires_at=in_days(20))).lot.lot_id
    await grant(stub, ws, 5)
    job = rid()
    await charge(stub, ws, 20, job)
    expire_now(db, ws, lot)
    await eventually(lambda: entries(stub, ws, pb.ENTRY_KIND_EXPIRE), within=5)
    assert 5 == (await balance(stub, ws)).available

    refunded = await stub.Refund(
        pb.RefundRequest(workspace_id=ws, request_id=rid("refund"), charge_request_id=job)
    )

    assert 20 == refunded.refunded
    assert 5 == (await balance(stub, ws)).available
    assert [-20, -30] == [e.amount for e in await entries(stub, ws, pb.ENTRY_KIND_EXPIRE)]
    await audit_is_clean(stub, ws)
