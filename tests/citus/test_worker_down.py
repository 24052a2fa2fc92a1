"""A worker stopped under two servers: only its workspaces stop, and they come back with it."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path
from typing import Any

import grpc
import pytest

from meterpb.v1 import events_pb2 as epb
from meterpb.v1 import events_pb2_grpc, meter_pb2_grpc
from meterpb.v1 import meter_pb2 as pb
from tests.citus.cluster import Cluster
from tests.citus.conftest import report
from tests.citus.support import deployment
from tests.support import eventually, failure, rid

pytestmark = pytest.mark.citus

# Each call's deadline: an answer (or a refusal) must come well within it.
DEADLINE_S = 15.0


async def job(stub: meter_pb2_grpc.MeterStub, ws: str) -> None:
    """A reservation committed and a charge: the calls a job makes."""
    r = rid()
    hold = await stub.Reserve(
        pb.ReserveRequest(workspace_id=ws, request_id=r, amount=3), timeout=DEADLINE_S
    )
    assert pb.HOLD_STATE_HELD == hold.hold.state
    await stub.Commit(pb.CommitRequest(workspace_id=ws, request_id=r, amount=2), timeout=DEADLINE_S)
    await stub.Charge(
        pb.ChargeRequest(workspace_id=ws, request_id=rid(), amount=1), timeout=DEADLINE_S
    )


async def reads(channel: grpc.aio.Channel, ws: str) -> list[str]:
    """Every read of one workspace, each of which must need no node but the workspace's
    own: the ones that fail, with their status."""
    stub = meter_pb2_grpc.MeterStub(channel)
    w = {"workspace_id": ws}
    t = DEADLINE_S

    async def watch() -> None:
        call = stub.WatchBalance(pb.WatchBalanceRequest(**w), timeout=t)
        first = await call.read()
        call.cancel()
        assert first.HasField("balance")

    calls: dict[str, Any] = {
        "GetBalance": lambda: stub.GetBalance(pb.GetBalanceRequest(**w), timeout=t),
        "ListHolds": lambda: stub.ListHolds(pb.ListHoldsRequest(**w), timeout=t),
        "ListTransactions": lambda: stub.ListTransactions(
            pb.ListTransactionsRequest(**w), timeout=t
        ),
        "ListAlerts": lambda: stub.ListAlerts(pb.ListAlertsRequest(**w), timeout=t),
        "ListMemberLimits": lambda: stub.ListMemberLimits(
            pb.ListMemberLimitsRequest(**w), timeout=t
        ),
        "GetAutoTopUp": lambda: stub.GetAutoTopUp(pb.GetAutoTopUpRequest(**w), timeout=t),
        "GetUsage by operation": lambda: stub.GetUsage(
            pb.GetUsageRequest(**w, group_by=pb.USAGE_GROUPING_OPERATION), timeout=t
        ),
        "GetUsage by actor": lambda: stub.GetUsage(
            pb.GetUsageRequest(**w, group_by=pb.USAGE_GROUPING_ACTOR), timeout=t
        ),
        "ListEvents of the workspace": lambda: events_pb2_grpc.EventsStub(channel).ListEvents(
            epb.ListEventsRequest(**w), timeout=t
        ),
        "WatchBalance": watch,
    }
    failed = []
    for name, call in calls.items():
        try:
            await call()
        except grpc.aio.AioRpcError as e:
            failed.append(f"{name}: {e.code().name} {e.details()}")
    return failed


async def test_a_stopped_worker_makes_only_its_workspaces_unavailable_until_it_is_back(
    cluster: Cluster, tmp_path: Path
) -> None:
    async with deployment(cluster, tmp_path) as d:
        kept, lost = cluster.workers
        spread = await d.spread(3)
        up, down = spread[kept.name], spread[lost.name]
        async with (
            grpc.aio.insecure_channel(d.targets[0]) as a,
            grpc.aio.insecure_channel(d.targets[1]) as b,
        ):
            channels = [a, b]
            stubs = [meter_pb2_grpc.MeterStub(a), meter_pb2_grpc.MeterStub(b)]
            for ws in up + down:
                await stubs[0].GrantCredits(
                    pb.GrantCreditsRequest(workspace_id=ws, request_id=rid("g"), amount=1000),
                    timeout=DEADLINE_S,
                )

            await cluster.stop(lost)
            stopped = time.monotonic()
            try:
                refusals: list[tuple[grpc.StatusCode, float]] = []

                async def refused(stub: meter_pb2_grpc.MeterStub, ws: str) -> None:
                    sent = time.monotonic()
                    try:
                        await stub.Charge(
                            pb.ChargeRequest(workspace_id=ws, request_id=rid(), amount=1),
                            timeout=DEADLINE_S,
                        )
                    except grpc.aio.AioRpcError as e:
                        refusals.append((failure(e).code, time.monotonic() - sent))
                        return
                    raise AssertionError(f"{ws} was charged on a stopped worker")

                # The stopped worker's workspaces are refused while the other's serve, at
                # the same time and through the same servers.
                await asyncio.gather(
                    *(refused(s, ws) for s in stubs for ws in down),
                    *(job(s, ws) for s in stubs for ws in up for _ in range(3)),
                )
                assert {grpc.StatusCode.UNAVAILABLE} == {code for code, _ in refusals}
                slowest_refusal = max(t for _, t in refusals)
                assert slowest_refusal < DEADLINE_S
                # ...and still do, after the refusals; every read of theirs answers too.
                await asyncio.gather(*(job(s, ws) for s in stubs for ws in up))
                failed = await asyncio.gather(*(reads(ch, ws) for ch in channels for ws in up))
                problems = sorted({f for fs in failed for f in fs})
                assert not problems, (
                    "reads of workspaces on the running worker failed while the other was"
                    " stopped: " + "; ".join(problems)
                )
            finally:
                await cluster.start(lost)
            started = time.monotonic()

            async def served_again() -> bool:
                try:
                    await asyncio.gather(*(job(s, ws) for s in stubs for ws in down))
                except grpc.aio.AioRpcError as e:
                    if e.code() != grpc.StatusCode.UNAVAILABLE:
                        raise
                    return False
                return True

            await eventually(served_again, within=60, interval=0.2)
            back = time.monotonic() - started
            await asyncio.gather(*(job(s, ws) for s in stubs for ws in up + down))
            failed = await asyncio.gather(*(reads(ch, ws) for ch in channels for ws in up + down))
            assert [] == sorted({f for fs in failed for f in fs})
        await d.still_serving()
    report(
        f"a worker stopped for {started - stopped:.1f}s: its workspaces refused UNAVAILABLE"
        f" within {slowest_refusal:.2f}s, the other's served; served again {back:.2f}s"
        " after it started, without a restart of Meter"
    )
