"""The printed report: each section's figures beside their references and targets, then one
summary table of every target, so a reader sees at once which are met."""

from __future__ import annotations

import dataclasses
import json
import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from bench.phases import (
    BIG,
    BUDGET_ROUNDS,
    HEADLINE,
    HEADLINE_WINDOW,
    HOT,
    MIXED,
    NO_BUDGETS,
    OPEN_LOOP_RATES,
    STREAMS,
    SUSTAIN,
    THREE_BUDGETS,
    UNARY,
    UNARY_WORKERS,
    WINDOWS,
    Phase,
    Results,
    open_loop_name,
    window_name,
)
from bench.refs import Reference

LATENCY_TARGET_RATE = 200


@dataclass
class Check:
    figure: str
    value: str
    reference: str
    target: str
    met: bool | None
    number: float | None = None  # the value unformatted, for --json readers


def num(v: float | None, digits: int = 0, suffix: str = "") -> str:
    return "n/a" if v is None else f"{v:,.{digits}f}{suffix}"


def ratio(a: float | None, b: float | None) -> float | None:
    return None if a is None or not b else a / b


def table(headers: Sequence[str], rows: Sequence[Sequence[str]], indent: str = "  ") -> str:
    """Left-aligned first column, the rest right-aligned, two spaces between columns."""
    cols = list(zip(headers, *rows, strict=True))
    widths = [max(len(c) for c in col) for col in cols]

    def line(cells: Sequence[str]) -> str:
        first = cells[0].ljust(widths[0])
        rest = (c.rjust(w) for c, w in zip(cells[1:], widths[1:], strict=True))
        return indent + "  ".join([first, *rest]).rstrip()

    return "\n".join([line(headers), *(line(r) for r in rows)])


def per_pair(p: Phase | Reference | None, key: str) -> float | None:
    return None if p is None else p.cpu.per_pair_us(p.pairs)[key]


class Report:
    def __init__(self, res: Results) -> None:
        self.res = res
        self.ph = res.phases
        self.limit = res.refs.get("limit")
        self.limit_one = res.refs.get("limit_one")
        self.ceiling = res.refs.get("ceiling")
        self.checks: list[Check] = []

    # -- the checks, gathered as the sections print ------------------------------------------

    def check(
        self,
        figure: str,
        value: float | None,
        show: Callable[[float | None], str],
        reference: str,
        target: tuple[str, float],
    ) -> str:
        op, bound = target
        met = None if value is None else (value <= bound if op == "<=" else value >= bound)
        sign = "≤" if op == "<=" else "≥"
        target_text = f"{sign} {show(bound)}"
        self.checks.append(Check(figure, show(value), reference, target_text, met, value))
        return f"{show(value)} [{target_text}: {_met(met)}]"

    # -- sections --------------------------------------------------------------------------

    def header(self) -> str:
        s = self.res.settings
        keys = ("synchronous_commit", "fsync", "autovacuum", "shared_buffers", "max_wal_size")
        shown = ", ".join(f"{k} {s[k]}" for k in keys if k in s)
        lines = [
            f"Meter benchmark: {os.cpu_count()} cores shared by server, clients and PostgreSQL"
            f" {s.get('server_version', '?')} ({shown})"
        ]
        idle = self.res.idle_pg_cores
        if idle is not None:
            lines.append(
                f"PostgreSQL's process tree drew {idle:.2f} cores before the run, with nothing of"
                " ours running. Its CPU counts whichever database it works for: the 'other DBs'"
                " columns show how much of it was other databases' backends."
            )
        rest = self.res.figures.get("at_rest_cores")
        if rest:
            lines.append(
                f"At rest (server up, no load): server {num(rest['server'], 2)} cores,"
                f" PostgreSQL {num(rest['pg'], 2)} cores."
            )
        every: list[Phase | Reference] = [*self.res.refs.values(), *self.ph.values()]
        shared = [p.name for p in every if (p.cpu.cores()["pg_foreign"] or 0) > 0.05]
        if shared:
            lines.append(
                "WARNING: other databases' backends used over 0.05 cores during "
                + ", ".join(shared)
                + ": the PostgreSQL figures of those phases include work that is not Meter's."
            )
        if s.get("autovacuum") == "off":
            lines.append(
                "autovacuum is off on this server: nothing vacuums or analyzes the ledger while"
                " it runs (the sustained phase is measured so)."
            )
        return "\n".join(lines)

    def references(self) -> str:
        rows = [
            [
                r.name,
                num(r.rate),
                num(per_pair(r, "pg_us")),
                num(per_pair(r, "pg_own_us")),
                num(per_pair(r, "children_us")),
                num(r.reported_pg_us),
                num(r.cpu.cores()["pg_foreign"], 2),
            ]
            for r in self.res.refs.values()
        ]
        if not rows:
            return ""
        head = ["PostgreSQL alone", "pairs/s", "PG µs/pair", "PG own µs", "pgbench+psql µs"]
        head += ["script's PG µs", "other DBs"]
        return "References: pgbench on the same scratch database\n" + table(head, rows)

    def cpu_split(self) -> str:
        rows = []
        for p in self.ph.values():
            us, cores = p.cpu.per_pair_us(p.pairs), p.cpu.cores()
            rows.append(
                [
                    p.name,
                    num(p.rate),
                    str(p.errors),
                    num(us["server_us"]),
                    num(us["pg_us"]),
                    num(us["pg_own_us"]),
                    num(us["client_us"]),
                    " / ".join(num(cores[k], 2) for k in ("server", "pg", "client")),
                    num(cores["pg_foreign"], 2),
                ]
            )
        if not rows:
            return ""
        head = ["phase", "pairs/s", "errors", "server µs", "PG µs", "PG own µs", "client µs"]
        head += ["cores s/PG/c", "other DBs"]
        return (
            "CPU per pair, every phase (µs of CPU per reserve+commit pair; PG own = less the"
            " other databases' live backends; cores used by the server / PostgreSQL / clients,"
            " and by other databases' backends)\n" + table(head, rows)
        )

    def windows(self) -> str:
        names = [window_name(n) for n in WINDOWS if window_name(n) in self.ph]
        if not names:
            return ""
        limit = self.limit.rate if self.limit else None
        ceiling = per_pair(self.ceiling, "pg_us")
        rows = []
        for name in names:
            p = self.ph[name]
            rows.append(
                [
                    name.removeprefix("Stream "),
                    num(p.rate),
                    num(ratio(p.rate, limit), 2),
                    num(per_pair(p, "server_us")),
                    num(per_pair(p, "pg_us")),
                    num(per_pair(p, "client_us")),
                    num(ratio(per_pair(p, "pg_us"), ceiling), 2),
                ]
            )
        rows.append(
            [f"target at {STREAMS}x{HEADLINE_WINDOW}", "", "≥ 3.0", "≤ 80", "", "", "≤ 2.0"]
        )
        head = ["window", "pairs/s", "÷ pg-limit", "server µs", "PG µs", "client µs", "PG ÷ ceil"]
        top = self.ph.get(HEADLINE)
        ref_limit = f"pg-limit {num(limit)} pairs/s"
        ref_ceil = f"pg-ceiling {num(ceiling)} µs PG/pair"
        self.check(
            f"Stream {STREAMS}x{HEADLINE_WINDOW} pairs/s ÷ pg-limit",
            ratio(top.rate, limit) if top else None,
            _r2,
            ref_limit,
            (">=", 3.0),
        )
        self.check(
            f"Stream {STREAMS}x{HEADLINE_WINDOW} PG CPU/pair ÷ pg-ceiling's",
            ratio(per_pair(top, "pg_us"), ceiling),
            _x2,
            ref_ceil,
            ("<=", 2.0),
        )
        self.check(
            f"Stream {STREAMS}x{HEADLINE_WINDOW} server CPU/pair",
            per_pair(top, "server_us"),
            _us,
            "",
            ("<=", 80),
        )
        title = f"Stream in-flight windows ({STREAMS} streams x N jobs in flight, 1,000 workspaces;"
        return f"{title} {ref_limit}, {ref_ceil})\n" + table(head, rows)

    def hot(self) -> str:
        p = self.ph.get(HOT)
        if p is None:
            return ""
        one = self.limit_one.rate if self.limit_one else None
        ref = f"pg-limit, 1 workspace: {num(one)} pairs/s"
        shown = self.check(f"{HOT} ÷ pg-limit 1 ws", ratio(p.rate, one), _r2, ref, (">=", 4.0))
        return f"{HOT}: {num(p.rate)} pairs/s; {ref}; ratio {shown}"

    def budgets(self) -> str:
        none, three = self.ph.get(NO_BUDGETS), self.ph.get(THREE_BUDGETS)
        if none is None or three is None:
            return ""
        rows, shown = [], {}
        for key, label in (("server_us", "server"), ("pg_us", "PostgreSQL")):
            a, b = per_pair(none, key), per_pair(three, key)
            shown[key] = self.check(
                f"3 budgets ÷ none, {label} CPU/pair",
                ratio(b, a),
                _x2,
                f"{NO_BUDGETS}: {_us(a)} µs",
                ("<=", 1.10),
            )
            rows.append([f"{label} CPU µs/pair", _us(a), _us(b), shown[key]])
        rows.insert(
            0, ["pairs/s", num(none.rate), num(three.rate), num(ratio(three.rate, none.rate), 2)]
        )
        head = ["", "no budgets", "3 budgets", "3 ÷ none"]
        return (
            f"Budgets: {HEADLINE} with an actor and labels, 1,000 workspaces without budgets and"
            f" 1,000 whose jobs fall under 3 (a member limit, a default per project, a named"
            f" team); {BUDGET_ROUNDS} rounds each, taking turns\n" + table(head, rows)
        )

    def unary(self) -> str:
        p = self.ph.get(UNARY)
        if p is None:
            return ""
        limit = self.limit.rate if self.limit else None
        limit_pg = per_pair(self.limit, "pg_us")
        ref_rate = f"pg-limit {num(limit)} pairs/s"
        ref_pg = f"pg-limit {num(limit_pg)} µs PG/pair"
        a = self.check(
            f"{UNARY} pairs/s ÷ pg-limit", ratio(p.rate, limit), _r2, ref_rate, (">=", 0.5)
        )
        b = self.check(
            f"{UNARY} PG CPU/pair ÷ pg-limit's",
            ratio(per_pair(p, "pg_us"), limit_pg),
            _x2,
            ref_pg,
            ("<=", 1.0),
        )
        c = self.check(f"{UNARY} server CPU/pair", per_pair(p, "server_us"), _us, "", ("<=", 500))
        return (
            f"Unary Reserve+Commit, {UNARY_WORKERS} workers, 1,000 workspaces: {num(p.rate)}"
            f" pairs/s\n  ÷ {ref_rate}: {a}\n  PG {num(per_pair(p, 'pg_us'))} µs/pair ÷ {ref_pg}:"
            f" {b}\n  server CPU per pair: {c}"
        )

    def latency(self) -> str:
        rows = []
        for rate in OPEN_LOOP_RATES:
            p = self.ph.get(open_loop_name(rate))
            if p is None:
                continue
            e = p.extra
            rows.append(
                [
                    f"{rate}/s",
                    num(p.rate),
                    str(e["jobs"]),
                    num(e["p50_ms"], 2),
                    num(e["p99_ms"], 2),
                    num(e["p999_ms"], 2),
                    num(e["max_ms"], 2),
                    f"{num(e['lag_p50_ms'], 2)} / {num(e['lag_p99_ms'], 2)}",
                    str(p.errors),
                ]
            )
        if not rows:
            return ""
        at = self.ph.get(open_loop_name(LATENCY_TARGET_RATE))
        e = at.extra if at else {}
        name = open_loop_name(LATENCY_TARGET_RATE)
        self.check(f"{name} Reserve p50", e.get("p50_ms"), _ms, "", ("<=", 3.0))
        self.check(f"{name} Reserve p99", e.get("p99_ms"), _ms, "", ("<=", 10.0))
        head = [
            "arrivals",
            "pairs/s",
            "jobs",
            "p50 ms",
            "p99 ms",
            "p99.9 ms",
            "max ms",
            "lag p50 / p99",
            "errors",
        ]
        return (
            "Open-loop Reserve latency (Poisson arrivals, each job a Reserve then a Commit,"
            " timed from its scheduled arrival; lag = how late this client started the job)"
            f"\n{table(head, rows)}\n  target at {LATENCY_TARGET_RATE}/s: p50 ≤ 3 ms, p99 ≤ 10 ms"
        )

    def mixed(self) -> str:
        p = self.ph.get("mixed")
        if p is None:
            return ""
        e = p.extra
        shown = self.check(
            "mixed load: unary Reserve p99", e["unary_reserve_p99_ms"], _ms, "", ("<=", 25.0)
        )
        return (
            f"Mixed load: Stream {STREAMS}x{MIXED['in_flight']}, {MIXED['unary']} unary workers,"
            f" {MIXED['watchers']} WatchBalance watchers, {MIXED['readers']} history readers\n"
            f"  Stream {num(e['stream_pairs_s'])} pairs/s, unary {num(e['unary_pairs_s'])} pairs/s,"
            f" watch messages {num(e['watch_messages_s'])}/s,"
            f" history reads {num(e['history_reads_s'])}/s"
            f" (p50 {num(e['history_p50_ms'], 1)} / p99 {num(e['history_p99_ms'], 1)} ms)\n"
            f"  unary Reserve p50 {num(e['unary_reserve_p50_ms'], 2)} ms, p99 {shown}\n"
            "  the Stream fleet, watchers and history readers ran in a process of their own,"
            f" started {e['background_lead_s']} s before the unary workers; the clients' CPU"
            f" includes its {num(e['background_cores'], 2)} cores"
        )

    def sustain(self) -> str:
        p = self.ph.get(SUSTAIN)
        if p is None:
            return ""
        e = p.extra
        w = e["window_s"]
        rows = [[f"{i * w}-{(i + 1) * w} s", num(r)] for i, r in enumerate(e["series"])]
        shown = self.check(
            "sustained: slowest 10 s ÷ mean of first 30 s",
            e["slowest_over_first"],
            _r2,
            f"{len(e['series'])} windows",
            (">=", 0.9),
        )
        return (
            f"Sustained Stream {STREAMS}x{HEADLINE_WINDOW} on a freshly migrated database"
            f" (no ANALYZE), pairs/s per {w} s\n{table(['window', 'pairs/s'], rows)}\n"
            f"  slowest window ÷ mean of the first 30 s: {shown}\n"
            f"  that server's peak RSS: {_mb(self.res.figures.get('sustain_rss_mb'))}"
        )

    def big(self) -> str:
        p = self.ph.get(BIG)
        f = self.res.figures
        lines = []
        if p is not None:
            empty = p.extra["empty_rate"]
            shown = self.check(
                f"{BIG} ÷ empty ledger",
                ratio(p.rate, empty),
                _r2,
                f"empty ledger {num(empty)} pairs/s",
                (">=", 0.9),
            )
            lines.append(
                f"Big ledger: {num(p.extra['rows'])} holds + {num(p.extra['rows'])} journal"
                f" rows (bulk load {num(f.get('big_load_s'))} s)\n"
                f"  Stream {num(p.rate)} pairs/s ÷ empty ledger {num(empty)}: {shown}"
            )
        if "first_page_ms" in f:
            shown = self.check(
                "ListTransactions first page, big ledger (median)",
                f["first_page_ms"],
                _ms,
                "",
                ("<=", 20.0),
            )
            lines.append(f"  ListTransactions first page (median of 50): {shown}")
        if f.get("rss_mb"):
            shown = self.check("server peak RSS", f["rss_mb"], _mb, "", ("<=", 300.0))
            lines.append(f"Server peak RSS: {shown}")
        return "\n".join(lines)

    def summary(self) -> str:
        rows = [[c.figure, c.value, c.reference, c.target, _met(c.met)] for c in self.checks]
        met = sum(c.met is True for c in self.checks)
        head = ["figure", "value", "reference", "target", "met?"]
        return f"Summary: {met} of {len(self.checks)} targets met\n" + table(head, rows)

    def text(self) -> str:
        sections = [
            self.header(),
            self.references(),
            self.windows(),
            self.hot(),
            self.budgets(),
            self.unary(),
            self.latency(),
            self.mixed(),
            self.sustain(),
            self.big(),
            self.cpu_split(),
        ]
        sections.append(self.summary())
        return "\n\n".join(s for s in sections if s)


def _met(met: bool | None) -> str:
    return "n/a" if met is None else ("yes" if met else "NO")


def _r2(v: float | None) -> str:
    return num(v, 2)


def _x2(v: float | None) -> str:
    return num(v, 2, "x")


def _us(v: float | None) -> str:
    return num(v, 0, " µs")


def _ms(v: float | None) -> str:
    return num(v, 2, " ms")


def _mb(v: float | None) -> str:
    return num(v, 0, " MB")


def render(res: Results) -> tuple[str, list[Check]]:
    rep = Report(res)
    return rep.text(), rep.checks


def dump(path: str, res: Results, checks: list[Check], args: dict[str, Any]) -> None:
    doc = {
        "args": args,
        "settings": res.settings,
        "idle_pg_cores": res.idle_pg_cores,
        "references": {k: _with_per_pair(v) for k, v in res.refs.items()},
        "phases": {k: _with_per_pair(v) for k, v in res.phases.items()},
        "figures": res.figures,
        "checks": [dataclasses.asdict(c) for c in checks],
    }
    Path(path).write_text(json.dumps(doc, indent=2, ensure_ascii=False))


def _with_per_pair(p: Phase | Reference) -> dict[str, Any]:
    return {
        **dataclasses.asdict(p),
        "per_pair": p.cpu.per_pair_us(p.pairs),
        "cores": p.cpu.cores(),
    }
