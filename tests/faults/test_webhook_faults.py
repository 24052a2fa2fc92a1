"""At least once under faults: a receiver that answers 500, then is down, two replicas
dispatching together, one of them SIGKILLed mid-delivery and restarted. Afterwards every
event was delivered, duplicates carry the same webhook-id and body, and the delivery log
agrees with what the receiver saw."""

from __future__ import annotations

import asyncio
import time
from collections import Counter, defaultdict
from collections.abc import Awaitable, Callable
from pathlib import Path

import grpc

from meterpb.v1 import events_pb2 as epb
from meterpb.v1 import events_pb2_grpc, meter_pb2_grpc
from meterpb.v1 import meter_pb2 as pb
from tests.events.receiver import Receiver
from tests.faults.conftest import FIGURES
from tests.faults.servers import ServerProcess
from tests.support import eventually

ENV = {
    "METER_WEBHOOK_RETRY_SCHEDULE": "0.2s,0.5s,1s,1s,1s,1s,1s,1s,1s,1s,1s,1s",
    "METER_WEBHOOK_TIMEOUT": "2s",
}


async def test_webhooks_arrive_at_least_once_through_500s_downtime_and_a_sigkill(
    fresh_url, fresh_db, tmp_path: Path
):
    receiver = Receiver(delay_s=0.05).start()
    logs = [tmp_path / "a.log", tmp_path / "b.log"]
    servers = [ServerProcess(fresh_url, log=logs[i], **ENV) for i in range(2)]
    acknowledged: list[str] = []
    try:
        await asyncio.gather(*(s.start() for s in servers))
        async with grpc.aio.insecure_channel(servers[1].target) as ch:
            made = await events_pb2_grpc.EventsStub(ch).CreateWebhookEndpoint(
                epb.CreateWebhookEndpointRequest(url=receiver.url, request_id="ep-faults")
            )
        stop = asyncio.Event()

        async def workload(n: int) -> None:
            i = 0
            while not stop.is_set():
                server = servers[(n + i) % 2]
                request = pb.GrantCreditsRequest(
                    workspace_id=f"ws-{n}", request_id=f"g-{n}-{i}", amount=1 + i % 7
                )
                try:
                    async with grpc.aio.insecure_channel(server.target) as ch:
                        await meter_pb2_grpc.MeterStub(ch).GrantCredits(request, timeout=2)
                    acknowledged.append(request.request_id)
                    i += 1
                except grpc.aio.AioRpcError:
                    await asyncio.sleep(0.05)  # that server is down: the same grant elsewhere
                await asyncio.sleep(0.02)

        async def answered(status: int, n: int) -> None:
            await eventually(_at_least(lambda: receiver.answered(status), n), within=30)

        async def refused(n: int) -> None:
            count = "SELECT count(*) FROM webhook_attempts WHERE status = 0"
            await eventually(_at_least(lambda: fresh_db.scalar(count), n), within=30)

        load = [asyncio.create_task(workload(n)) for n in range(4)]
        await answered(200, 20)  # deliveries flow
        receiver.status = 500  # answers 500 for a while
        await answered(500, 30)
        receiver.status = 200
        await answered(200, 60)
        receiver.stop()  # down for a while: connections refused
        await refused(20)
        receiver.start()
        receiver.delay_s = 0.3  # slow answers: deliveries are in flight when the kill comes
        await eventually(_at_least(lambda: receiver.inflight, 2), within=30)
        await servers[0].kill()
        before = len(acknowledged)
        await servers[0].start()
        receiver.delay_s = 0.05
        # Both replicas serve and dispatch again before the load stops.
        await eventually(_at_least(lambda: len(acknowledged), before + 60), within=30)
        await eventually(_at_least(lambda: receiver.answered(200), 200), within=30)
        stop.set()
        await asyncio.gather(*load)

        stored = {
            f"evt_{r.sequence}_{r.workspace_id}"
            for r in fresh_db.rows(
                "SELECT workspace_id, sequence FROM events WHERE workspace_id <> ''"
            )
        }
        assert len(stored) == len(acknowledged)

        async def all_delivered() -> bool:
            return stored <= set(receiver.ids(ok_only=True))

        started = time.monotonic()
        await eventually(all_delivered, within=90, interval=0.2)
        drained_s = time.monotonic() - started
        await eventually(lambda: _no_pending(fresh_db), within=30, interval=0.2)
    finally:
        for s in servers:
            await s.stop()
        receiver.stop()

    seen = receiver.seen()
    bodies: dict[str, set[bytes]] = defaultdict(set)
    for r in seen:
        bodies[r.webhook_id].add(r.body)
    assert set(bodies) == stored, "the receiver saw an id that is no event"
    changed = {k: sorted(b) for k, b in bodies.items() if len(b) > 1}
    assert not changed, f"a redelivery changed its body: {changed}"
    ok = Counter(r.webhook_id for r in seen if r.answered == 200)
    asked = Counter(r.webhook_id for r in seen)
    # The delivery log agrees with the receiver: each event delivered, and no logged answer
    # that the receiver did not give (an attempt cut off by the kill may go unlogged).
    log = fresh_db.rows("SELECT a.event_id, a.status FROM webhook_attempts a WHERE a.status > 0")
    logged_ok = Counter(e for e, status in log if status == 200)
    logged = Counter(e for e, _ in log)
    assert all(logged_ok[e] >= 1 for e in stored), "a delivery is not logged as delivered"
    assert all(logged_ok[e] <= ok[e] and logged[e] <= asked[e] for e in logged)
    assert 0 == fresh_db.scalar("SELECT count(*) FROM webhook_deliveries WHERE state <> 1")
    dupes = sum(ok.values()) - len(ok)
    for path in logs:
        assert made.secret.removeprefix("whsec_") not in path.read_text()
    FIGURES.append(
        f"webhooks through 500s, downtime, 2 replicas and a SIGKILL: {len(stored)} events,"
        f" {len(stored)} delivered, 0 lost, {dupes} duplicate deliveries (same webhook-id),"
        f" {len(seen)} requests, drained {drained_s:.1f} s after the load"
    )


def _at_least(count: Callable[[], int], n: int) -> Callable[[], Awaitable[bool]]:
    async def check() -> bool:
        return count() >= n

    return check


async def _no_pending(db) -> bool:  # type: ignore[no-untyped-def]
    return not db.scalar("SELECT count(*) FROM webhook_deliveries WHERE state = 0")
