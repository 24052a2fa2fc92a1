"""PostgreSQL's own figures for the hot path, from the shared pgbench scripts.

pg-limit runs the least SQL a durable reserve+commit pair needs, one pair per transaction
pair; pg-ceiling runs the same rows batched and set-based. Both run on the benchmark's own
scratch database (in schemas of their own), so the service is measured against them in the
same run and the ratios, not the absolute rates, are what to quote.
"""

from __future__ import annotations

import os
import re
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

from bench.cpu import Cpu, CpuMeter
from meter.storage.db import libpq_url

ROOT = Path(__file__).resolve().parents[1]
SHARED = ROOT.parent / "shared/bench"
PG_LIMIT = Path(os.environ.get("METER_PG_LIMIT", SHARED / "pg-limit"))
PG_CEILING = Path(os.environ.get("METER_PG_CEILING", SHARED / "pg-ceiling"))
# A backend that has just been told to exit may not be reaped yet when its script returns;
# its CPU shows in the postmaster's cutime only after that, so wait a moment before reading.
SETTLE_S = 0.3
SETUP_TIMEOUT_S = 120


@dataclass
class Reference:
    name: str
    rate: float
    pairs: int
    cpu: Cpu
    reported_pg_us: float | None = None  # what the script itself measured, when it does


def _run(script: Path, args: list[str], seconds: int) -> str:
    if not script.is_file():
        env = "METER_PG_LIMIT" if script.name == "pg-limit" else "METER_PG_CEILING"
        raise SystemExit(f"{script.name} not found at {script}: set {env} to its path")
    # pgbench stops itself after `seconds`; the bound is for a setup stuck on a lock.
    timeout = seconds + SETUP_TIMEOUT_S
    cmd = ["bash", str(script), *args]
    return subprocess.run(cmd, check=True, capture_output=True, text=True, timeout=timeout).stdout


def _figure(out: str, key: str) -> float | None:
    m = re.search(rf"^{key} (\d+(?:\.\d+)?)", out, re.M)
    return float(m.group(1)) if m else None


def _measure(meter: CpuMeter, script: Path, args: list[str]) -> tuple[str, Cpu]:
    start = meter.sample()
    out = _run(script, args, int(args[2]))
    time.sleep(SETTLE_S)
    return out, meter.since(start)


def pg_limit(
    meter: CpuMeter, url: str, clients: int, seconds: int, workspaces: int, name: str
) -> Reference:
    out, cpu = _measure(
        meter, PG_LIMIT, [libpq_url(url), str(clients), str(seconds), str(workspaces), "1"]
    )
    rate = _figure(out, "limit_pairs_per_s")
    if rate is None:
        raise RuntimeError(f"pg-limit printed no figure: {out}")
    # pgbench reports a rate over its -T seconds; the pairs are that rate times those seconds.
    return Reference(name, rate, int(rate * seconds), cpu)


def pg_ceiling(
    meter: CpuMeter, url: str, clients: int, seconds: int, workspaces: int, batch: int
) -> Reference:
    args = [libpq_url(url), str(clients), str(seconds), str(workspaces), str(batch)]
    out, cpu = _measure(meter, PG_CEILING, args)
    rate = _figure(out, "ceiling_pairs_per_s")
    if rate is None:
        raise RuntimeError(f"pg-ceiling printed no figure: {out}")
    name = f"pg-ceiling ({clients} clients, {workspaces:,} workspaces, batch {batch})"
    return Reference(name, rate, int(rate * seconds), cpu, _figure(out, "ceiling_pg_us_per_pair"))
