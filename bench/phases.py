"""The benchmark's phases against one server and its database, each with its CPU split.

A phase's rate counts the pairs finished inside its timed window; its CPU per pair divides
everything the three parties spent from start to the end of the drain by every pair
finished, so neither figure is flattered by the jobs still in flight at the deadline.
"""

from __future__ import annotations

import asyncio
import sys
import time
from collections.abc import Awaitable
from dataclasses import dataclass, field
from typing import Any, TypeVar

from bench import background, db, load
from bench.cpu import Cpu, CpuMeter, PgTree
from bench.refs import Reference
from bench.server import Server, fund, set_budgets

T = TypeVar("T")

MANY = [f"bench-{i:04d}" for i in range(1000)]
SOLO = "bench-solo"
STREAMS = 4
WINDOWS = (16, 64, 256, 2000)
HEADLINE_WINDOW = 256
OPEN_LOOP_RATES = (50, 100, 200, 400)
UNARY_WORKERS = 32
MIXED = {"in_flight": 64, "unary": 8, "watchers": 50, "readers": 4}
# How long the mixed phase's background process runs before the unary workers start, so
# they meet its load going at full rate. Whole seconds: the Stream tally's per-second bins
# then line up with the unary workers' window.
MIXED_LEAD_S = 1
SUSTAIN_WINDOW_S = 10
SUSTAIN_BASE_S = 30
HEADLINE = f"Stream {STREAMS}x{HEADLINE_WINDOW}"
HOT = f"{HEADLINE}, one workspace"
EMPTY = f"{HEADLINE}, empty ledger"
BIG = f"{HEADLINE}, big ledger"
SUSTAIN = f"{HEADLINE}, sustained"
# The budgets phase: the headline load with each job's actor and labels, on workspaces with
# no budget and on workspaces whose jobs each fall under three (limits nothing reaches),
# taking turns so that drift on a shared machine falls on both alike.
BUDGETED = [f"bench-budgets-{i:04d}" for i in range(1000)]
BUDGET_JOB = load.Job(actor_id="worker-7", labels={"project": "launch", "team": "growth"})
BUDGET_ROUNDS = 3
NO_BUDGETS = f"{HEADLINE}, no budgets"
THREE_BUDGETS = f"{HEADLINE}, 3 budgets"
UNARY = f"unary, {UNARY_WORKERS} workers"
# Unmeasured load after a server starts: connections, caches and the first plans are warm
# before anything is timed, as they are on a server that has been up for a while.
WARMUP_S = 2


@dataclass
class Phase:
    name: str
    rate: float
    pairs: int
    errors: int
    cpu: Cpu
    extra: dict[str, Any] = field(default_factory=dict)


@dataclass
class Results:
    settings: dict[str, str] = field(default_factory=dict)
    idle_pg_cores: float | None = None
    refs: dict[str, Reference] = field(default_factory=dict)
    phases: dict[str, Phase] = field(default_factory=dict)
    figures: dict[str, Any] = field(default_factory=dict)


def progress(text: str) -> None:
    print(text, file=sys.stderr, flush=True)


class Bench:
    """One database, its PostgreSQL tree and (once started) one server on it."""

    def __init__(self, url: str, seconds: int, results: Results, workers: int = 1) -> None:
        self.url = url
        self.seconds = seconds
        self.workers = workers
        self.res = results
        self.tree: PgTree | None = db.pg_tree(url)
        self.server: Server | None = None
        self.peak_rss_mb = 0.0

    @property
    def target(self) -> str:
        assert self.server is not None, "the server is not running"
        return self.server.target

    def meter(self, helpers: list[int] | None = None) -> CpuMeter:
        return CpuMeter(self.tree, self.server.pids() if self.server else (), helpers or [])

    async def start_server(self, workspaces: list[str], warmup: bool = True) -> None:
        self.server = Server(self.url, self.workers)
        await self.server.ready()
        await fund(self.server.target, workspaces)
        if warmup:
            await load.stream_pairs(self.target, MANY, STREAMS, HEADLINE_WINDOW, WARMUP_S)

    def stop_server(self) -> None:
        if self.server is not None:
            self.peak_rss_mb = max(self.peak_rss_mb, self.server.peak_rss_mb())
            self.server.stop()
            self.server = None

    async def at_rest(self, seconds: float) -> None:
        """What the running server and PostgreSQL draw with no load: the floor under the
        CPU per pair of the low-rate phases."""
        _, cpu = await self.timed(asyncio.sleep(seconds))
        self.res.figures["at_rest_cores"] = cpu.cores()

    async def timed(self, work: Awaitable[T]) -> tuple[T, Cpu]:
        meter = self.meter()
        start = meter.sample()
        result = await work
        return result, meter.since(start)

    def record(self, name: str, tally: load.Tally, cpu: Cpu, seconds: int) -> Phase:
        return self.add(Phase(name, tally.rate(seconds), tally.pairs, tally.errors, cpu))

    def add(self, phase: Phase) -> Phase:
        self.res.phases[phase.name] = phase
        us = phase.cpu.per_pair_us(phase.pairs)
        progress(
            f"  {phase.name}: {phase.rate:,.0f} pairs/s, per pair server {_us(us['server_us'])},"
            f" PostgreSQL {_us(us['pg_us'])}, clients {_us(us['client_us'])} µs"
            + (f", {phase.errors} errors" if phase.errors else "")
        )
        return phase

    async def stream(
        self, name: str, workspaces: list[str], in_flight: int, seconds: int | None = None
    ) -> tuple[Phase, load.Tally]:
        secs = seconds or self.seconds
        work = load.stream_pairs(self.target, workspaces, STREAMS, in_flight, secs)
        tally, cpu = await self.timed(work)
        return self.record(name, tally, cpu, secs), tally


def _us(v: float | None) -> str:
    return "n/a" if v is None else f"{v:,.0f}"


def window_name(in_flight: int) -> str:
    return f"Stream {STREAMS}x{in_flight}"


async def windows(b: Bench) -> None:
    for n in WINDOWS:
        await b.stream(window_name(n), MANY, n)


async def hot(b: Bench) -> None:
    await b.stream(HOT, [SOLO], HEADLINE_WINDOW)


async def budgets(b: Bench) -> None:
    """What a reserve pays for being checked against 3 budgets (a member limit, a default
    per-project budget and a named team budget), beside the same jobs under none. Each arm's
    figures add up its rounds: CPU per pair over all of its pairs."""
    await fund(b.target, BUDGETED)
    await set_budgets(b.target, BUDGETED, BUDGET_JOB)
    tallies: dict[str, list[tuple[load.Tally, Cpu]]] = {NO_BUDGETS: [], THREE_BUDGETS: []}
    for _ in range(BUDGET_ROUNDS):
        for name, workspaces in ((NO_BUDGETS, MANY), (THREE_BUDGETS, BUDGETED)):
            work = load.stream_pairs(
                b.target, workspaces, STREAMS, HEADLINE_WINDOW, b.seconds, job=BUDGET_JOB
            )
            tallies[name].append(await b.timed(work))
    for name, runs in tallies.items():
        pairs = sum(t.pairs for t, _ in runs)
        rate = sum(t.rate(b.seconds) for t, _ in runs) / len(runs)
        cpu = sum((c for _, c in runs[1:]), runs[0][1])
        b.add(Phase(name, rate, pairs, sum(t.errors for t, _ in runs), cpu))


async def unary(b: Bench) -> None:
    tally, cpu = await b.timed(load.unary_pairs(b.target, MANY, UNARY_WORKERS, b.seconds))
    b.record(UNARY, tally, cpu, b.seconds)


def open_loop_name(rate: int) -> str:
    return f"open loop {rate}/s"


def latency_figures(t: load.Tally) -> dict[str, Any]:
    return {
        "jobs": len(t.latencies),
        "p50_ms": load.percentile_ms(t.latencies, 0.50),
        "p99_ms": load.percentile_ms(t.latencies, 0.99),
        "p999_ms": load.percentile_ms(t.latencies, 0.999),
        "max_ms": load.percentile_ms(t.latencies, 1.0),
        "lag_p50_ms": load.percentile_ms(t.lags, 0.50),
        "lag_p99_ms": load.percentile_ms(t.lags, 0.99),
    }


async def latency(b: Bench) -> None:
    for rate in OPEN_LOOP_RATES:
        tally, cpu = await b.timed(load.open_loop(b.target, MANY, rate, b.seconds, seed=rate))
        phase = b.record(open_loop_name(rate), tally, cpu, b.seconds)
        phase.extra = {"rate": rate, **latency_figures(tally)}


async def mixed(b: Bench) -> None:
    """Unary Reserve latency while a Stream fleet, watchers and history readers share the
    server. Those run in a child process, as production's other callers are other
    processes: in this one's event loop their messages would delay the unary workers' own
    wake-ups, and that delay would be timed as the server's."""
    s, lead = b.seconds, MIXED_LEAD_S
    params = background.Params(
        target=b.target,
        workspaces=MANY,
        watched=MANY[: MIXED["watchers"]],
        streams=STREAMS,
        in_flight=MIXED["in_flight"],
        readers=MIXED["readers"],
        seconds=lead + s,
    )
    async with background.running(params) as bg:
        # From the child's `started` on: its start-up is not load, so not counted as such.
        meter = b.meter(helpers=[bg.pid])
        start = meter.sample()
        await asyncio.sleep(lead)
        un = await load.unary_pairs(b.target, MANY, MIXED["unary"], s, record=True)
        tallies = await bg.result()
        # Read while the child, done, waits to be let go: /proc still has all of its CPU.
        cpu = meter.since(start)
    st, wa, hi = tallies.stream, tallies.watch, tallies.history
    if not sum(st.series[:lead]):
        progress("  WARNING: the background Stream fleet finished no pairs before the unary run")
    # The Stream rate is over the seconds it shared with the unary workers; the CPU per pair
    # divides all that was spent from `started` to the drain by every pair finished in it.
    stream_rate = st.rate(s, after=lead)
    rate, pairs = stream_rate + un.rate(s), st.pairs + un.pairs
    phase = b.add(Phase("mixed", rate, pairs, st.errors + un.errors, cpu))
    phase.extra = {
        "stream_pairs_s": stream_rate,
        "unary_pairs_s": un.rate(s),
        "unary_reserve_p50_ms": load.percentile_ms(un.latencies, 0.50),
        "unary_reserve_p99_ms": load.percentile_ms(un.latencies, 0.99),
        # Watchers and readers ran for the child's whole `lead + s` seconds.
        "history_reads_s": hi.messages / (lead + s),
        "history_p50_ms": load.percentile_ms(hi.latencies, 0.50),
        "history_p99_ms": load.percentile_ms(hi.latencies, 0.99),
        "watch_messages_s": wa.messages / (lead + s),
        "errors_watch_history": wa.errors + hi.errors,
        "background_process": True,
        "background_lead_s": lead,
        "background_cores": cpu.cores()["helpers"],
    }


async def big(b: Bench, rows: int) -> None:
    """The headline Stream load again once the ledger holds `rows` old jobs."""
    empty = b.res.phases.get(HEADLINE)
    if empty is None:
        empty, _ = await b.stream(EMPTY, MANY, HEADLINE_WINDOW)
    # The rows and the workspaces' id counters change under the server, which may keep
    # account rows in memory: it is stopped for the load and started afresh on the result.
    b.stop_server()
    t0 = time.perf_counter()
    db.bulk_ledger(b.url, rows, MANY)
    b.res.figures["big_load_s"] = time.perf_counter() - t0
    await b.start_server([])
    phase, _ = await b.stream(BIG, MANY, HEADLINE_WINDOW)
    phase.extra = {"rows": rows, "empty_rate": empty.rate}
    b.res.figures["first_page_ms"] = await load.first_page_ms(b.target, MANY[0])


async def sustain(b: Bench, seconds: int) -> None:
    """Stream load for `seconds` on a database nobody has analyzed: the rate per window."""
    phase, tally = await b.stream(SUSTAIN, MANY, HEADLINE_WINDOW, seconds)
    series = tally.windows(SUSTAIN_WINDOW_S)[: seconds // SUSTAIN_WINDOW_S]
    base = series[: SUSTAIN_BASE_S // SUSTAIN_WINDOW_S]
    first = sum(base) / len(base) if base else 0.0
    phase.extra = {
        "window_s": SUSTAIN_WINDOW_S,
        "series": series,
        "slowest_over_first": min(series) / first if first else None,
    }
