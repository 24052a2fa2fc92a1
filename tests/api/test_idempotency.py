"""Idempotency (DESIGN.md §3), through unary calls and through Stream alike."""

from __future__ import annotations

import asyncio

from meterpb.v1 import meter_pb2 as pb
from tests.paths import refused
from tests.support import balance, grant, rid


async def test_a_replayed_reserve_returns_the_same_hold_and_holds_once(path, stub, ws):
    await grant(stub, ws, 100)
    req = pb.ReserveRequest(workspace_id=ws, request_id=rid(), amount=10, labels={"job": "a"})
    first = await path.reserve(req)
    again = await path.reserve(req)
    assert first == again
    assert (90, 10) == ((b := await balance(stub, ws)).available, b.held)


async def test_a_replayed_reserve_of_a_committed_hold_returns_that_hold(path, stub, ws):
    await grant(stub, ws, 100)
    req = pb.ReserveRequest(workspace_id=ws, request_id=rid(), amount=10)
    first = await path.reserve(req)
    await path.commit(pb.CommitRequest(workspace_id=ws, request_id=req.request_id, amount=4))
    again = await path.reserve(req)
    assert (first.hold_id, pb.HOLD_STATE_COMMITTED, 4) == (
        again.hold_id,
        again.state,
        again.charged,
    )
    assert 96 == (await balance(stub, ws)).available


async def test_a_replayed_commit_returns_the_same_charge_and_charges_once(path, stub, ws):
    await grant(stub, ws, 100)
    job = rid()
    await path.reserve(pb.ReserveRequest(workspace_id=ws, request_id=job, amount=10))
    req = pb.CommitRequest(workspace_id=ws, request_id=job, amount=6)
    first = await path.commit(req)
    again = await path.commit(req)
    assert (first.charged, first.released, first.shortfall, first.hold) == (
        again.charged,
        again.released,
        again.shortfall,
        again.hold,
    )
    assert (94, 6) == ((b := await balance(stub, ws)).available, b.lifetime_used)


async def test_a_replayed_charge_charges_once(path, stub, ws):
    await grant(stub, ws, 100)
    req = pb.ChargeRequest(workspace_id=ws, request_id=rid(), operation="content.optimize")
    first = await path.charge(req)
    again = await path.charge(req)
    assert (first.charged, first.hold) == (again.charged, again.hold)
    assert 98 == (await balance(stub, ws)).available


async def test_a_replayed_release_returns_the_same_answer(path, stub, ws):
    await grant(stub, ws, 100)
    job = rid()
    await path.reserve(pb.ReserveRequest(workspace_id=ws, request_id=job, amount=10))
    first = await path.release(pb.ReleaseRequest(workspace_id=ws, request_id=job))
    again = await path.release(pb.ReleaseRequest(workspace_id=ws, request_id=job))
    assert first == again
    assert 100 == (await balance(stub, ws)).available


async def test_reserve_reusing_a_request_id_with_other_parameters_is_refused(path, stub, ws, db):
    await grant(stub, ws, 100)
    job = rid()
    await path.reserve(pb.ReserveRequest(workspace_id=ws, request_id=job, amount=10))
    before = db.snapshot(ws)
    f = await refused(path.reserve(pb.ReserveRequest(workspace_id=ws, request_id=job, amount=11)))
    assert ("INVALID_ARGUMENT", "REQUEST_ID_REUSED", ["request_id"]) == (
        f.code.name,
        f.reason,
        f.fields,
    )
    assert before == db.snapshot(ws)


async def test_commit_reusing_a_request_id_with_another_amount_is_refused(path, stub, ws, db):
    await grant(stub, ws, 100)
    job = rid()
    await path.reserve(pb.ReserveRequest(workspace_id=ws, request_id=job, amount=10))
    await path.commit(pb.CommitRequest(workspace_id=ws, request_id=job, amount=5))
    before = db.snapshot(ws)
    f = await refused(path.commit(pb.CommitRequest(workspace_id=ws, request_id=job, amount=6)))
    assert ("INVALID_ARGUMENT", "REQUEST_ID_REUSED") == (f.code.name, f.reason)
    assert before == db.snapshot(ws)


async def test_a_charge_id_cannot_be_reused_as_a_reserve(path, stub, ws):
    await grant(stub, ws, 100)
    job = rid()
    await path.charge(pb.ChargeRequest(workspace_id=ws, request_id=job, amount=1))
    f = await refused(path.reserve(pb.ReserveRequest(workspace_id=ws, request_id=job, amount=1)))
    assert "REQUEST_ID_REUSED" == f.reason


async def test_a_grant_id_cannot_be_reused_as_a_reserve(path, stub, ws):
    pay = rid("pay")
    await stub.GrantCredits(pb.GrantCreditsRequest(workspace_id=ws, request_id=pay, amount=10))
    f = await refused(path.reserve(pb.ReserveRequest(workspace_id=ws, request_id=pay, amount=1)))
    assert "REQUEST_ID_REUSED" == f.reason


async def test_a_replayed_grant_adds_credits_once(stub, ws):
    req = pb.GrantCreditsRequest(workspace_id=ws, request_id=rid("pay"), package="Starter")
    first = await stub.GrantCredits(req)
    again = await stub.GrantCredits(req)
    assert (first.entry, first.lot) == (again.entry, again.lot)
    assert 100 == (await balance(stub, ws)).available


async def test_a_refused_reserve_leaves_nothing_and_succeeds_on_retry_after_a_top_up(
    path, stub, ws, db
):
    await grant(stub, ws, 5)
    req = pb.ReserveRequest(workspace_id=ws, request_id=rid(), amount=8)
    before = db.snapshot(ws)
    f = await refused(path.reserve(req))
    assert "INSUFFICIENT_CREDITS" == f.reason
    after = db.snapshot(ws)
    assert (before["holds"], before["journal"], before["lots"]) == (
        after["holds"],
        after["journal"],
        after["lots"],
    )
    await grant(stub, ws, 5)
    hold = await path.reserve(req)
    assert (8, pb.HOLD_STATE_HELD) == (hold.amount, hold.state)


async def test_twenty_identical_reserves_racing_make_one_hold_and_twenty_identical_answers(
    path, stub, ws, db
):
    await grant(stub, ws, 100)
    req = pb.ReserveRequest(workspace_id=ws, request_id=rid(), amount=7)
    answers = await asyncio.gather(*(path.reserve(req) for _ in range(20)))
    assert 1 == len({a.SerializeToString(deterministic=True) for a in answers})
    assert 1 == db.scalar("SELECT count(*) FROM holds WHERE workspace_id = :w", w=ws)
    assert (93, 7) == ((b := await balance(stub, ws)).available, b.held)


async def test_identical_commits_racing_charge_once(path, stub, ws):
    await grant(stub, ws, 100)
    job = rid()
    await path.reserve(pb.ReserveRequest(workspace_id=ws, request_id=job, amount=9))
    req = pb.CommitRequest(workspace_id=ws, request_id=job, amount=4)
    answers = await asyncio.gather(*(path.commit(req) for _ in range(10)))
    assert {4} == {a.charged for a in answers}
    assert (96, 0, 4) == ((b := await balance(stub, ws)).available, b.held, b.lifetime_used)


async def test_a_worker_that_lost_the_reserve_answer_can_still_commit_by_request_id(path, stub, ws):
    await grant(stub, ws, 20)
    job = rid()
    await path.reserve(pb.ReserveRequest(workspace_id=ws, request_id=job, amount=5))
    done = await path.commit(pb.CommitRequest(workspace_id=ws, request_id=job, amount=2))
    assert (2, 3) == (done.charged, done.released)
