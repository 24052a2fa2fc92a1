"""Jobs under faults: crashes, database restarts, lost answers, races, replicas, pauses.

Every scenario runs retrying clients against real `meter serve` processes and a real
PostgreSQL while it breaks something, then checks the ledger against the clients' history:
no charge lost, none doubled, every answer the one the model gives.
"""

from __future__ import annotations

import asyncio
import signal
import time
import uuid

import grpc
import pytest

from meterpb.v1 import meter_pb2 as pb
from meterpb.v1 import meter_pb2_grpc
from tests.faults.checker import check
from tests.faults.conftest import report
from tests.faults.dropper import AnswerDropper
from tests.faults.history import History
from tests.faults.servers import PrivatePostgres, ServerProcess
from tests.faults.workload import Mix, Policy, answered, load, workspaces
from tests.support import Db, eventually


async def test_sigkilled_servers_lose_and_double_no_charge(fresh_url, fresh_db):
    server = ServerProcess(fresh_url)
    history = History()
    try:
        await server.start()
        async with load([server.target], history, workspaces(4), tag="kill", workers=12):
            for _ in range(3):
                await answered(history, 150)
                await server.kill()
                await server.start()
            await answered(history, 150)
        figures = await check("SIGKILL of meter serve", server.target, fresh_db, history)
    finally:
        await server.stop()
    figures.kills, figures.restarts = server.kills, server.starts - 1
    report(figures.line())
    assert (3, 0, 0) == (figures.kills, figures.lost, figures.doubled)


async def test_sigkilled_servers_lose_and_double_no_charge_over_stream(fresh_url, fresh_db):
    """The same kills with every job's calls as items of Meter.Stream: a kill breaks the
    streams with items in flight, and their retries go over new streams."""
    server = ServerProcess(fresh_url)
    history = History()
    try:
        await server.start()
        async with load(
            [server.target], history, workspaces(4), tag="skill", workers=24, stream=True
        ) as jobs:
            for _ in range(3):
                await answered(history, 200)
                await server.kill()
                await server.start()
            await answered(history, 200)
            sessions = jobs.client.sessions
        figures = await check("SIGKILL, jobs over Stream", server.target, fresh_db, history)
    finally:
        await server.stop()
    figures.kills, figures.restarts = server.kills, server.starts - 1
    items, messages = sum(s.items_sent for s in sessions), sum(s.messages_sent for s in sessions)
    figures.notes.append(f"{items} items in {messages} Stream messages")
    report(figures.line())
    assert (3, 0, 0) == (figures.kills, figures.lost, figures.doubled)
    assert figures.transient["UNAVAILABLE"] > 0  # the kills broke streams with items in flight
    assert items > messages  # the items did travel batched


async def test_sigkilled_workers_and_supervisor_lose_and_double_no_charge(fresh_url, fresh_db):
    """`meter serve --workers 2`: a worker killed (its supervisor starts another), then the
    supervisor itself (its workers go with it) and a fresh start, all under load."""
    server = ServerProcess(fresh_url, METER_WORKERS="2")
    history = History()
    try:
        await server.start()
        async with load([server.target], history, workspaces(4), tag="wkill", workers=12):
            for _ in range(2):
                await answered(history, 150)
                server.kill_worker()
            await answered(history, 150)
            await server.kill()
            await server.start()
            await answered(history, 150)
        figures = await check("SIGKILL, 2 workers", server.target, fresh_db, history)
    finally:
        await server.stop()
    figures.kills, figures.restarts = server.kills, server.starts - 1
    report(figures.line())
    assert (3, 0, 0) == (figures.kills, figures.lost, figures.doubled)


async def test_a_postgres_restart_gives_unavailable_then_the_server_serves_again():
    """The server keeps running; its PostgreSQL (a private one) stops and starts twice."""
    pg = PrivatePostgres()
    server: ServerProcess | None = None
    history = History()
    try:
        url = await pg.start()
        db = Db(url)
        server = await ServerProcess(url).start()
        outage_codes: set[str] = set()
        recoveries: list[float] = []
        async with load([server.target], history, workspaces(4), tag="pg", workers=10):
            for _ in range(2):
                await answered(history, 60)
                before = history.transient_codes()
                await pg.stop_database()
                await _until_refused(server.target, "UNAVAILABLE")
                enough = sum(before.values()) + 5
                await _until(lambda: history.transient_codes().total() >= enough)  # noqa: B023
                outage_codes |= set(history.transient_codes() - before)
                await pg.start_database()
                started = time.monotonic()
                await _until_charge_succeeds(server.target, within=10)
                recoveries.append(time.monotonic() - started)
            await answered(history, 60)
        figures = await check("PostgreSQL restarts", server.target, db, history)
        db.close()
    finally:
        if server is not None:
            await server.stop()
        await pg.close()
    figures.restarts = pg.restarts
    figures.notes.append(
        "served again after " + ", ".join(f"{r:.1f}s" for r in recoveries) + " (limit 10s)"
    )
    report(figures.line())
    assert {"UNAVAILABLE"} == outage_codes
    assert all(r <= 10 for r in recoveries)
    assert (0, 0) == (figures.lost, figures.doubled)


async def test_answers_lost_to_short_deadlines_are_resolved_by_retries(fresh_url, fresh_db):
    """Deadlines shorter than the work: the server commits, the client has given up; the
    retry with the same request id must get the first answer, not a second charge."""
    server = ServerProcess(fresh_url)
    history = History()
    try:
        await server.start()
        policy = Policy(deadline=0.004, growth=2.0)
        async with load(
            [server.target], history, workspaces(3), tag="lost", policy=policy, workers=12
        ):
            await answered(history, 400, within=60)
        figures = await check("lost answers (short deadlines)", server.target, fresh_db, history)
    finally:
        await server.stop()
    report(figures.line())
    assert figures.transient["DEADLINE_EXCEEDED"] > 0
    assert (0, 0, 0) == (figures.lost, figures.doubled, figures.unknown)


async def test_duplicates_commits_releases_and_the_sweeper_race_without_harm(fresh_url, fresh_db):
    """Short TTLs and slow jobs: commits race the expiry sweeper (some land late), commits
    race releases and duplicate commits and reserves race each other; some workers die
    holding, and only the sweeper ends their holds."""
    server = ServerProcess(fresh_url)
    history = History()
    try:
        await server.start()
        mix = Mix(ttl=1.0, think=2.0, race=0.35, replay=0.3, reuse=0.2, abandon=0.1)
        async with load([server.target], history, workspaces(3), tag="race", mix=mix, workers=24):
            await answered(history, 500, within=60)

        async def swept() -> bool:  # state 1 is HELD
            return 0 == fresh_db.scalar("SELECT count(*) FROM holds WHERE state = 1")

        await eventually(swept, within=15)
        figures = await check(
            "races (duplicates, sweeper, release)", server.target, fresh_db, history
        )
    finally:
        await server.stop()
    report(figures.line())
    assert figures.late > 0
    assert figures.expired > 0
    assert figures.reused > 0
    assert (0, 0) == (figures.lost, figures.doubled)


async def test_two_replicas_on_one_database_share_workspaces_safely(fresh_url, fresh_db):
    first, second = ServerProcess(fresh_url), ServerProcess(fresh_url)
    history = History()
    try:
        await asyncio.gather(first.start(), second.start())
        # Members with a monthly limit that their jobs run into, racing on both replicas.
        mix = Mix(ttl=1.5, think=1.0, race=0.2, limit=100)
        async with load(
            [first.target, second.target], history, workspaces(2), tag="dual", mix=mix, workers=16
        ):
            await answered(history, 600, within=60)
        figures = await check("two replicas, same workspaces", first.target, fresh_db, history)
    finally:
        await asyncio.gather(first.stop(), second.stop())
    limited = sum(1 for c in history.calls if c.reason == "MEMBER_LIMIT_REACHED")
    figures.notes.append(f"{limited} refused at a member limit")
    report(figures.line())
    assert (0, 0) == (figures.lost, figures.doubled)
    assert limited > 0


async def test_a_paused_server_past_the_deadlines_resumes_without_harm(fresh_url, fresh_db):
    server = ServerProcess(fresh_url)
    history = History()
    try:
        await server.start()
        async with load(
            [server.target], history, workspaces(3), tag="stop", policy=Policy(deadline=0.5)
        ):
            for _ in range(2):
                await answered(history, 80)
                seen = _retried(history, "DEADLINE_EXCEEDED")
                server.signal(signal.SIGSTOP)
                try:
                    await _until(
                        lambda: _retried(history, "DEADLINE_EXCEEDED") >= seen + 8  # noqa: B023
                    )
                finally:
                    server.signal(signal.SIGCONT)
            await answered(history, 80)
        figures = await check("SIGSTOP / SIGCONT", server.target, fresh_db, history)
    finally:
        await server.stop()
    figures.notes.append("2 pauses")
    report(figures.line())
    assert (0, 0) == (figures.lost, figures.doubled)


@pytest.mark.parametrize("stream", [False, True], ids=["unary", "stream"])
async def test_answers_dropped_after_the_commit_are_resolved_by_retries(
    fresh_url, fresh_db, stream
):
    """Over Stream, a dropped answer cuts the connection under every item in flight (and
    answers are fewer, larger messages, so a larger share of them is dropped)."""
    server = ServerProcess(fresh_url)
    history = History()
    dropper = AnswerDropper(("127.0.0.1", server.port), share=0.15 if stream else 0.05)
    name = "answers dropped by a proxy" + (", jobs over Stream" if stream else "")
    try:
        await server.start()
        await dropper.start()
        async with load(
            [f"127.0.0.1:{dropper.port}"],
            history,
            workspaces(3),
            tag="sdrop" if stream else "drop",
            workers=24 if stream else 12,
            stream=stream,
        ):
            await answered(history, 400, within=60)
            await _until(lambda: dropper.dropped >= 3, within=60)  # drops are random: a few
        figures = await check(name, server.target, fresh_db, history)
    finally:
        await dropper.cut()
        await server.stop()
    figures.notes.append(f"{dropper.dropped} answers dropped")
    report(figures.line())
    assert dropper.dropped > 0
    assert (0, 0, 0) == (figures.lost, figures.doubled, figures.unknown)


def _retried(history: History, code: str) -> int:
    """Attempts that failed with `code` so far (of calls in flight too)."""
    return history.transient_codes()[code]


async def _until(condition, within: float = 20.0) -> None:
    async def check_() -> bool:
        return bool(condition())

    await eventually(check_, within=within)


async def _until_refused(target: str, code: str) -> None:
    async with grpc.aio.insecure_channel(target) as ch:
        stub = meter_pb2_grpc.MeterStub(ch)

        async def refused() -> bool:
            try:
                await stub.GetBalance(pb.GetBalanceRequest(workspace_id="ws-probe"), timeout=2)
            except grpc.aio.AioRpcError as e:
                return bool(e.code().name == code)
            return False

        await eventually(refused, within=10)


async def _until_charge_succeeds(target: str, within: float) -> None:
    """A real write through the restarted database: a grant to a probe workspace."""
    async with grpc.aio.insecure_channel(target) as ch:
        stub = meter_pb2_grpc.MeterStub(ch)

        async def served() -> bool:
            try:
                await stub.GrantCredits(
                    pb.GrantCreditsRequest(
                        workspace_id="ws-probe", request_id=uuid.uuid4().hex, amount=1
                    ),
                    # Longer than the server's wait for a ledger connection (1 s).
                    timeout=3,
                )
            except grpc.aio.AioRpcError as e:
                if e.code().name != "UNAVAILABLE":
                    raise AssertionError(f"while the database comes back: {e}") from e
                return False
            return True

        await eventually(served, within=within, interval=0.05)
