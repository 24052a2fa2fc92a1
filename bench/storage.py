"""The ledger's storage alone: batches of reserves, then of their commits, with no gRPC.

It isolates what the database path costs per reserve+commit pair at a given batch size, in
this process (the rules, the batch's messages) and in PostgreSQL, so designs of that path
can be compared without the server's other work in the figures:

    python -m bench.storage [--batch 128] [--pairs 25600] [--rounds 1] [--events]
                            [--drop-index NAME] [--database-url URL]

With --events every workspace holds nothing: each pair reserves 0 and commits 1, which falls
short, so each pair also writes a commit.shortfall event to the outbox (the same journal
rows otherwise): the figures against a run without it are what the outbox costs per event.

With --drop-index the ledger runs without that index (migrated, then dropped): the figures
against a run with it are what the index costs the hot path.

Four lanes run side by side, each on its own quarter of 1,000 workspaces (as the batcher
keeps concurrent batches apart). Rounds run one after another on the same ledger, so a
cost that grows with the tables shows as a rising figure.
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
import os
import random
import time

from sqlalchemy import text

from bench import db as bench_db
from bench.cpu import PgTree
from meter.catalog.model import Usage
from meter.ledger.commands import CommitCmd, GrantCmd, ReserveCmd
from meter.storage import db
from meter.storage.ledger_repo import LedgerRepo
from meter.storage.nodes import LedgerNodes

WORKSPACES = [f"w{i:04d}" for i in range(1000)]
LANES = 4


def _price(operation: str, version: int, usage: Usage) -> int:
    return 2


def _pg_cpu_s(tree: PgTree | None) -> float:
    """CPU seconds of PostgreSQL's whole process tree (0 when it runs elsewhere)."""
    return tree.cpu_s()[0] if tree else 0.0


def _own_cpu_s() -> float:
    t = os.times()
    return t.user + t.system


async def run(
    url: str, batch: int, pairs: int, rounds: int, events: bool = False, drop_index: str = ""
) -> None:
    db.migrate(url)
    if drop_index:
        engine = db.sync_engine(url)
        with engine.begin() as conn:
            conn.execute(text(f'DROP INDEX "{drop_index}"'))
        engine.dispose()
    tree = bench_db.pg_tree(url)
    nodes = LedgerNodes(url, LANES, 5.0)
    await nodes.open()
    repo = LedgerRepo(nodes)
    try:
        await repo.apply(
            [
                GrantCmd(w, "fund", 1 if events else 10**11, None, "bench", "", "", {}, "fp")
                for w in WORKSPACES
            ],
            _price,
        )
        ids = itertools.count()
        rnd = random.Random(1)
        per_lane = max(pairs // (LANES * batch), 1)
        span = len(WORKSPACES) // LANES
        held, actual = (0, 1) if events else (3, 2)

        async def lane(k: int) -> None:
            mine = WORKSPACES[k * span : (k + 1) * span]
            for _ in range(per_lane):
                chosen = rnd.sample(mine, min(batch, len(mine)))
                jobs = [f"j{next(ids)}" for _ in chosen]
                await repo.apply(
                    [
                        ReserveCmd(w, j, held, "content.generate_post", 1, "", {}, 900, "fp")
                        for w, j in zip(chosen, jobs, strict=True)
                    ],
                    _price,
                )
                await repo.apply(
                    [
                        CommitCmd(w, j, actual, None, {}, "cfp")
                        for w, j in zip(chosen, jobs, strict=True)
                    ],
                    _price,
                )

        for r in range(1, rounds + 1):
            me0, pg0, t0 = _own_cpu_s(), _pg_cpu_s(tree), time.perf_counter()
            await asyncio.gather(*(lane(k) for k in range(LANES)))
            elapsed = time.perf_counter() - t0
            n = per_lane * LANES * min(batch, span)
            pg = f"{(_pg_cpu_s(tree) - pg0) / n * 1e6:.0f}" if tree else "n/a"
            written = f", {n / elapsed:,.0f} events/s" if events else ""
            print(
                f"round {r}: batch {batch}: {n / elapsed:,.0f} pairs/s{written},"
                f" per pair: this process {(_own_cpu_s() - me0) / n * 1e6:.0f} us,"
                f" PostgreSQL {pg} us"
            )
    finally:
        await nodes.close()


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__)
    bench_db.add_database_url(p)
    p.add_argument("--batch", type=int, default=128, help="commands per batch")
    p.add_argument("--pairs", type=int, default=25_600, help="reserve+commit pairs per round")
    p.add_argument("--rounds", type=int, default=1)
    p.add_argument("--events", action="store_true", help="every pair also writes an event")
    p.add_argument("--drop-index", default="", help="run without this index of the schema")
    args = p.parse_args()
    url = bench_db.fresh_database(args.database_url)
    try:
        asyncio.run(run(url, args.batch, args.pairs, args.rounds, args.events, args.drop_index))
    finally:
        bench_db.drop_database(args.database_url, url)


if __name__ == "__main__":
    main()
