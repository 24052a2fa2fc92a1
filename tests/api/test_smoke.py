"""The generated stubs and the server live in one process, and a job's life works end to end."""

from __future__ import annotations

from meterpb.v1 import meter_pb2 as pb
from tests.support import balance, grant, reserve, rid


async def test_a_job_reserves_commits_and_is_charged_its_actual_cost(stub, ws):
    await grant(stub, ws, 100)
    job = rid()
    hold = await reserve(stub, ws, job, 10)
    assert pb.HOLD_STATE_HELD == hold.state
    assert 90 == (await balance(stub, ws)).available

    done = await stub.Commit(pb.CommitRequest(workspace_id=ws, request_id=job, amount=4))

    assert (4, 6, 0) == (done.charged, done.released, done.shortfall)
    assert pb.HOLD_STATE_COMMITTED == done.hold.state
    b = await balance(stub, ws)
    assert (96, 0, 4, 100) == (b.available, b.held, b.lifetime_used, b.lifetime_granted)
