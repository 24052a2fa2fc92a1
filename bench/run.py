"""`make bench`: Meter's throughput, latency, CPU and memory, each beside PostgreSQL's own.

One run, one scratch database: pg-limit and pg-ceiling measure what PostgreSQL itself does
for a durable reserve+commit pair (one pair per transaction, and batched set-based), then
one `meter serve` process (loopback gRPC, asyncio clients in this process) is measured on
the same database. Every phase reports where the CPU went per pair: the server process,
PostgreSQL's whole process tree, and the load clients. The sustained phase alone runs on a
second fresh database with its own server, since it is about a ledger nobody has tuned.

    python -m bench.run [--seconds 8] [--sustain-seconds 180] [--big-rows 10000000]
                        [--only limits,windows,hot,budgets,unary,latency,mixed,sustain,big]
                        [--json PATH]

--only runs a subset of the phases, and with them the references they are compared with
(pg-limit for windows and unary, pg-ceiling for windows, pg-limit on one workspace for hot).
"""

from __future__ import annotations

import argparse
import asyncio
import time

from bench import db, phases, refs, report
from bench.cpu import CpuMeter
from bench.phases import MANY, SOLO, Bench, Results, progress

PHASES = ("limits", "windows", "hot", "budgets", "unary", "latency", "mixed", "big", "sustain")
SERVER_PHASES = ("windows", "hot", "budgets", "unary", "latency", "mixed", "big")
IDLE_SAMPLE_S = 2.0


def references_needed(only: set[str]) -> set[str]:
    """The references the chosen phases are compared with; all of them for `limits`."""
    if "limits" in only:
        return {"limit", "limit_one", "ceiling"}
    need = set()
    if only & {"windows", "unary"}:
        need.add("limit")
    if "windows" in only:
        need.add("ceiling")
    if "hot" in only:
        need.add("limit_one")
    return need


def run_references(b: Bench, need: set[str]) -> None:
    meter = CpuMeter(b.tree)
    s = b.seconds
    jobs = {
        "limit": lambda: refs.pg_limit(meter, b.url, 8, s, 1000, "pg-limit (8 clients, 1,000 ws)"),
        "limit_one": lambda: refs.pg_limit(meter, b.url, 8, s, 1, "pg-limit (8 clients, 1 ws)"),
        "ceiling": lambda: refs.pg_ceiling(meter, b.url, 4, s, 1000, 64),
    }
    for key in ("limit", "limit_one", "ceiling"):
        if key in need:
            ref = jobs[key]()
            b.res.refs[key] = ref
            us = ref.cpu.per_pair_us(ref.pairs)["pg_us"]
            progress(f"  {ref.name}: {ref.rate:,.0f} pairs/s, PostgreSQL {us or 0:,.0f} µs/pair")


def idle_pg_cores(b: Bench) -> float | None:
    """What PostgreSQL's tree draws with nothing of ours running: the noise floor."""
    if b.tree is None:
        return None
    meter = CpuMeter(b.tree)
    start = meter.sample()
    time.sleep(IDLE_SAMPLE_S)
    return meter.since(start).cores()["pg"]


async def main_database(args: argparse.Namespace, only: set[str], res: Results) -> None:
    url = db.fresh_database(args.database_url)
    b = Bench(url, args.seconds, res, args.workers)
    res.figures["workers"] = args.workers
    try:
        res.settings = db.settings(url)
        res.idle_pg_cores = idle_pg_cores(b)
        need = references_needed(only)
        if need:
            progress("references:")
        run_references(b, need)
        if not only & set(SERVER_PHASES):
            return
        await b.start_server([*MANY, SOLO])
        await b.at_rest(IDLE_SAMPLE_S)
        for name, phase in (
            ("windows", phases.windows),
            ("hot", phases.hot),
            ("budgets", phases.budgets),
            ("unary", phases.unary),
            ("latency", phases.latency),
            ("mixed", phases.mixed),
        ):
            if name in only:
                progress(f"{name}:")
                await phase(b)
        if "big" in only:
            progress(f"big ({args.big_rows:,} rows):")
            await phases.big(b, args.big_rows)
    finally:
        b.stop_server()
        if b.peak_rss_mb:
            res.figures["rss_mb"] = b.peak_rss_mb
        db.drop_database(args.database_url, url)


async def sustain_database(args: argparse.Namespace, res: Results) -> None:
    url = db.fresh_database(args.database_url)
    b = Bench(url, args.seconds, res)
    try:
        if not res.settings:
            res.settings = db.settings(url)
        await b.start_server(MANY, warmup=False)
        progress(f"sustain ({args.sustain_seconds} s):")
        await phases.sustain(b, args.sustain_seconds)
    finally:
        b.stop_server()
        res.figures["sustain_rss_mb"] = b.peak_rss_mb
        db.drop_database(args.database_url, url)


async def main(args: argparse.Namespace) -> Results:
    only = parse_only(args.only)
    res = Results()
    try:
        if only - {"sustain"}:
            await main_database(args, only, res)
        if "sustain" in only:
            await sustain_database(args, res)
    finally:
        checks: list[report.Check] = []
        try:
            text, checks = report.render(res)
            print(text, flush=True)
        finally:
            # Written even when the report cannot be, so no measured figure is lost.
            if args.json:
                report.dump(args.json, res, checks, vars(args))
    return res


def parse_only(text: str) -> set[str]:
    only = {p.strip() for p in text.split(",") if p.strip()} if text else set(PHASES)
    unknown = only - set(PHASES)
    if unknown:
        raise SystemExit(f"unknown phase(s) {', '.join(sorted(unknown))}; known: {PHASES}")
    return only


def parse() -> argparse.Namespace:
    p = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    db.add_database_url(p)
    p.add_argument("--seconds", type=int, default=8, help="timed seconds per phase")
    p.add_argument("--sustain-seconds", type=int, default=180)
    # --journal-rows is the older name of the option, kept so existing commands still run.
    p.add_argument("--big-rows", "--journal-rows", type=int, default=10_000_000)
    p.add_argument("--only", default="", help=f"comma-separated subset of {','.join(PHASES)}")
    p.add_argument("--json", default="", help="write every figure to this file")
    p.add_argument("--workers", type=int, default=1, help="meter serve --workers: server processes")
    return p.parse_args()


if __name__ == "__main__":
    asyncio.run(main(parse()))
