"""The job context manager: reserve, then commit on success or release on an exception."""

from __future__ import annotations

import asyncio

import pytest

from meter.client import MeterClient, request_id_for, usage
from meterpb.v1 import meter_pb2 as pb
from tests.support import balance, grant, rid


async def test_a_job_that_succeeds_is_charged_the_actual_cost_it_set(meter, stub, ws):
    await grant(stub, ws, 100)

    async with meter.job(ws, "content.generate_post", job_id=rid(), amount=10) as j:
        assert pb.HOLD_STATE_HELD == j.hold.state
        assert 90 == (await balance(stub, ws)).available
        j.actual = 4

    done = j.result
    assert done is not None
    assert (4, 6, pb.HOLD_STATE_COMMITTED) == (done.charged, done.released, done.hold.state)
    assert 96 == (await balance(stub, ws)).available


async def test_a_job_without_an_actual_cost_is_charged_its_reserved_usage(meter, stub, ws):
    await grant(stub, ws, 100)
    complex_post = usage(complexity="complex", items=2)

    async with meter.job(ws, "content.generate_post", job_id=rid(), usage=complex_post) as j:
        pass

    # content.generate_post costs 3 per post at the complex tier.
    assert 6 == j.result.charged
    assert 94 == (await balance(stub, ws)).available


async def test_a_job_that_raises_releases_its_hold_and_the_error_propagates(target, stub, ws):
    await grant(stub, ws, 100)
    job = rid()

    def run() -> None:
        with MeterClient(target) as meter, meter.job(ws, "strategy.analyze", job_id=job, amount=20):
            raise ValueError("the model timed out")

    with pytest.raises(ValueError, match="the model timed out"):
        await asyncio.to_thread(run)

    b = await balance(stub, ws)
    assert (100, 0, 0) == (b.available, b.held, b.lifetime_used)
    holds = await stub.ListHolds(pb.ListHoldsRequest(workspace_id=ws))
    assert [(request_id_for(job), pb.HOLD_STATE_RELEASED)] == [
        (h.request_id, h.state) for h in holds.holds
    ]


async def test_a_cancelled_job_still_releases_its_hold(meter, stub, ws):
    await grant(stub, ws, 100)
    started = asyncio.Event()

    async def work() -> None:
        async with meter.job(ws, "strategy.analyze", job_id=rid(), amount=20):
            started.set()
            await asyncio.Event().wait()

    task = asyncio.create_task(work())
    await started.wait()
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task

    b = await balance(stub, ws)
    assert (100, 0) == (b.available, b.held)


async def test_a_requeued_job_reuses_its_request_id_and_is_charged_once(meter, stub, ws):
    await grant(stub, ws, 100)
    job = f"queue/7/{rid()}"  # a job id that is not a valid request id as it stands

    results = []
    for _ in range(2):  # the queue delivers the job twice
        async with meter.job(ws, "strategy.analyze", job_id=job, amount=5) as j:
            j.actual = 5
        results.append(j.result)

    assert request_id_for(job) == results[0].hold.request_id
    assert results[0] == results[1]
    b = await balance(stub, ws)
    assert (95, 5) == (b.available, b.lifetime_used)


async def test_extend_pushes_the_expiry_of_a_running_job(meter, stub, ws):
    await grant(stub, ws, 100)

    async with meter.job(ws, "strategy.analyze", job_id=rid(), amount=3, ttl=60) as j:
        first = j.hold.expires_at.ToDatetime()
        await j.extend(3600)
        assert 3000 < (j.hold.expires_at.ToDatetime() - first).total_seconds()
        j.actual = 3


def test_a_job_id_gives_the_same_valid_request_id_every_time():
    import re

    ids = ["42", "queue/7/job 42", "x" * 300, "ünïcode"]

    derived = [request_id_for(i) for i in ids]

    assert derived == [request_id_for(i) for i in ids]
    assert "job:42" == derived[0]
    assert len(set(derived)) == len(ids)
    assert all(re.fullmatch(r"[A-Za-z0-9._:-]{1,128}", d) for d in derived)
