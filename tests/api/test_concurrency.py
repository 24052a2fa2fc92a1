"""Concurrent jobs on one balance never overdraw it, through unary calls and Stream alike."""

from __future__ import annotations

import asyncio

from meterpb.v1 import meter_pb2 as pb
from tests.paths import RefusedError
from tests.support import balance, grant, rid


async def _try(call):
    try:
        return await call
    except RefusedError as e:
        return e.failure


async def test_fifty_concurrent_reserves_of_three_on_a_hundred_hold_exactly_thirty_three(
    path, stub, ws, db
):
    await grant(stub, ws, 100)
    results = await asyncio.gather(
        *(
            _try(path.reserve(pb.ReserveRequest(workspace_id=ws, request_id=rid(), amount=3)))
            for _ in range(50)
        )
    )
    held = [r for r in results if isinstance(r, pb.Hold)]
    refused = [r for r in results if not isinstance(r, pb.Hold)]
    assert 33 == len(held)
    assert {"INSUFFICIENT_CREDITS"} == {f.reason for f in refused}
    b = await balance(stub, ws)
    assert (1, 99) == (b.available, b.held)
    assert 33 == db.scalar("SELECT count(*) FROM holds WHERE workspace_id = :w", w=ws)


async def test_concurrent_charges_never_take_the_balance_below_zero(path, stub, ws):
    await grant(stub, ws, 50)
    results = await asyncio.gather(
        *(
            _try(path.charge(pb.ChargeRequest(workspace_id=ws, request_id=rid(), amount=7)))
            for _ in range(20)
        )
    )
    charged = sum(r.charged for r in results if isinstance(r, pb.ChargeResponse))
    assert 49 == charged
    assert 1 == (await balance(stub, ws)).available


async def test_concurrent_commits_above_their_holds_share_what_is_available(path, stub, ws):
    await grant(stub, ws, 40)
    jobs = [rid() for _ in range(8)]
    for j in jobs:
        await path.reserve(pb.ReserveRequest(workspace_id=ws, request_id=j, amount=4))
    done = await asyncio.gather(
        *(path.commit(pb.CommitRequest(workspace_id=ws, request_id=j, amount=6)) for j in jobs)
    )
    assert 40 == sum(d.charged for d in done)
    assert 8 == sum(d.shortfall for d in done)
    b = await balance(stub, ws)
    assert (0, 0, 40) == (b.available, b.held, b.lifetime_used)


async def test_releases_racing_commits_settle_every_hold_exactly_once(path, stub, ws):
    await grant(stub, ws, 100)
    jobs = [rid() for _ in range(10)]
    for j in jobs:
        await path.reserve(pb.ReserveRequest(workspace_id=ws, request_id=j, amount=5))
    outcomes = await asyncio.gather(
        *(
            _try(path.commit(pb.CommitRequest(workspace_id=ws, request_id=j, amount=5)))
            for j in jobs
        ),
        *(_try(path.release(pb.ReleaseRequest(workspace_id=ws, request_id=j))) for j in jobs),
    )
    commits, releases = outcomes[:10], outcomes[10:]
    charged = 0
    for c, r in zip(commits, releases, strict=True):
        won_commit = isinstance(c, pb.CommitResponse)
        won_release = isinstance(r, pb.Hold)
        assert won_commit != won_release  # exactly one of them takes effect
        charged += c.charged if won_commit else 0
    b = await balance(stub, ws)
    assert (100 - charged, 0, charged) == (b.available, b.held, b.lifetime_used)


async def test_many_workspaces_in_one_batch_keep_their_balances_apart(path, stub):
    wss = [f"ws-many-{rid()}" for _ in range(20)]
    for w in wss:
        await grant(stub, w, 10)
    await asyncio.gather(
        *(
            path.charge(pb.ChargeRequest(workspace_id=w, request_id=rid(), amount=i + 1))
            for i, w in enumerate(wss)
            if i < 10
        )
    )
    assert [10 - (i + 1) if i < 10 else 10 for i in range(20)] == [
        (await balance(stub, w)).available for w in wss
    ]
