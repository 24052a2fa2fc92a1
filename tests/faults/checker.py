"""The invariant checker: the server's Audit over every workspace, and the clients' history.

Audit proves the ledger agrees with itself (journal vs balance, lots, holds, draws). The
history check proves it agrees with what the clients were told: the server's two dense,
commit-ordered sequences per workspace (holds by hold id, journal entries by entry id) are
replayed through the model, and every answer a client received is compared with the model's.
"""

from __future__ import annotations

from collections import Counter, defaultdict
from dataclasses import dataclass, field
from typing import Any

import grpc

from meterpb.v1 import meter_pb2 as pb
from meterpb.v1 import meter_pb2_grpc
from tests.faults import model as m
from tests.faults.history import Call, History
from tests.support import Db

# Server time (now() of the transaction) against client monotonic time, same machine.
SLACK = 0.05
FINAL_REFUSALS = {
    ("INVALID_ARGUMENT", "REQUEST_ID_REUSED"),
    ("FAILED_PRECONDITION", "HOLD_RELEASED"),
    ("FAILED_PRECONDITION", "HOLD_COMMITTED"),
    ("FAILED_PRECONDITION", "MEMBER_LIMIT_REACHED"),
}


@dataclass
class Figures:
    name: str
    jobs: int = 0
    calls: int = 0
    retries: int = 0
    unknown: int = 0
    kills: int = 0
    restarts: int = 0
    committed: int = 0  # jobs the clients saw charged (Commit or Charge answered)
    lost: int = 0
    doubled: int = 0
    late: int = 0
    expired: int = 0
    reused: int = 0  # REQUEST_ID_REUSED answers to changed parameters
    transient: Counter[str] = field(default_factory=Counter)
    notes: list[str] = field(default_factory=list)

    def line(self) -> str:
        codes = ", ".join(f"{k} {v}" for k, v in sorted(self.transient.items())) or "none"
        extra = "".join(f"; {n}" for n in self.notes)
        return (
            f"{self.name}: {self.jobs} jobs, {self.kills} kills, {self.restarts} restarts, "
            f"{self.lost} lost, {self.doubled} doubled ({self.committed} charged jobs, "
            f"{self.calls} calls, {self.retries} retries, {self.unknown} unknown, "
            f"{self.late} late commits, {self.expired} expired holds, "
            f"{self.reused} reuses refused; retried on: {codes}{extra})"
        )


async def audit(target: str) -> list[Any]:
    """Discrepancies the Audit RPC finds across every workspace of the database."""
    async with grpc.aio.insecure_channel(target) as ch:
        report = await meter_pb2_grpc.MeterStub(ch).Audit(pb.AuditRequest(), timeout=30)
    assert report.workspaces_checked > 0
    return list(report.discrepancies)


async def check(name: str, target: str, db: Db, history: History) -> Figures:
    """Audit, replay and compare; raise AssertionError listing every violation."""
    figures = Figures(name, jobs=history.jobs, calls=len(history.calls))
    figures.retries = history.retries()
    figures.transient = history.transient_codes()
    figures.unknown = sum(1 for c in history.calls if c.outcome == "unknown")
    problems = [f"audit: {d}".strip() for d in await audit(target)]
    async with grpc.aio.insecure_channel(target) as ch:
        stub = meter_pb2_grpc.MeterStub(ch)
        for ws in sorted(history.workspaces()):
            b = await stub.GetBalance(pb.GetBalanceRequest(workspace_id=ws), timeout=10)
            problems += _replay(ws, db, history, b, figures)
    assert not problems, f"{figures.line()}\n" + "\n".join(problems[:40])
    return figures


def _replay(ws: str, db: Db, history: History, balance: Any, fig: Figures) -> list[str]:
    out: list[str] = []
    calls: dict[str, list[Call]] = defaultdict(list)
    for c in history.calls:
        if c.workspace_id == ws:
            calls[c.request_id].append(c)
    for c in (c for cs in calls.values() for c in cs):
        if c.outcome == "refused" and (c.code, c.reason) not in FINAL_REFUSALS:
            out.append(f"{ws}/{c.request_id}: {c.kind} refused {c.code} {c.reason}")
    holds = db.rows(
        "SELECT hold_id, request_id, kind, state, amount, charged, shortfall, late, actor_id "
        "FROM holds WHERE workspace_id = :w ORDER BY hold_id",
        w=ws,
    )
    limits = dict(
        db.rows(
            "SELECT scope_value, credit_limit FROM budgets"
            " WHERE workspace_id = :w AND scope_key = 'actor_id'",
            w=ws,
        )
    )
    entries = db.rows(
        "SELECT entry_id, kind, amount, balance_after, request_id, shortfall, late "
        "FROM journal WHERE workspace_id = :w ORDER BY entry_id",
        w=ws,
    )
    ledger = m.Ledger(ws, limits=limits)
    for c in (c for cs in calls.values() for c in cs):
        if c.reason == "MEMBER_LIMIT_REACHED" and c.params[-1] not in limits:
            out.append(f"{ws}/{c.request_id}: MEMBER_LIMIT_REACHED for {c.params[-1]!r}")
    by_rid = {h.request_id: h for h in holds}
    pending = list(holds)

    def create_through(hold_id: int) -> None:
        while pending and pending[0].hold_id <= hold_id:
            h = pending.pop(0)
            kind = "reserve" if h.kind == m.RESERVE else "charge"
            asked = [c for c in calls[h.request_id] if c.kind == kind]
            if not any(c.params[0] == h.amount for c in asked):
                out.append(f"{ws}/{h.request_id}: a hold of {h.amount} nobody asked for")
            got = ledger.hold(h.request_id, h.kind, h.amount, h.actor_id)
            if got.hold_id != h.hold_id:
                out.append(f"{ws}/{h.request_id}: hold id {h.hold_id}, model {got.hold_id}")

    charges: Counter[str] = Counter()
    for e in entries:
        if e.entry_id != ledger.entries + 1:
            out.append(f"{ws}: journal entry {e.entry_id} after {ledger.entries}")
        if e.kind == 1:
            after = ledger.grant(e.amount)
            if not any(c.kind == "grant" and c.params[0] == e.amount for c in calls[e.request_id]):
                out.append(f"{ws}/{e.request_id}: a grant nobody asked for")
        elif e.kind == 2:
            charges[e.request_id] += 1
            h = by_rid.get(e.request_id)
            if h is None:
                out.append(f"{ws}/{e.request_id}: charged without a hold")
                continue
            create_through(h.hold_id)
            actual = h.charged + h.shortfall
            kind = "commit" if h.kind == m.RESERVE else "charge"
            if not any(c.kind == kind and c.params[0] == actual for c in calls[e.request_id]):
                out.append(f"{ws}/{e.request_id}: charged {actual} that nobody asked for")
            try:
                got = ledger.commit(e.request_id, actual, e.late)
            except AssertionError as err:
                out.append(f"{ws}: {err}")
                continue
            after = got.balance_after
            if (-got.charged, got.shortfall) != (e.amount, e.shortfall):
                out.append(f"{ws}/{e.request_id}: entry {e.amount}/{e.shortfall}, model {got}")
        else:
            out.append(f"{ws}: unexpected journal entry kind {e.kind}")
            continue
        if after != e.balance_after:
            out.append(f"{ws}: entry {e.entry_id} balance_after {e.balance_after}, model {after}")
    create_through(1 << 62)
    fig.doubled += sum(1 for n in charges.values() if n > 1)
    # Holds that did not end in a charge: released or expired, as the clients' calls allow.
    for h in holds:
        mh = ledger.holds[h.request_id]
        if h.state == m.RELEASED:
            if not any(c.kind == "release" for c in calls[h.request_id]):
                out.append(f"{ws}/{h.request_id}: released without a Release")
            ledger.release(h.request_id)
        elif h.state == m.EXPIRED:
            fig.expired += 1
            ledger.expire(h.request_id)
        if mh.state != h.state:
            out.append(f"{ws}/{h.request_id}: state {h.state}, model {mh.state}")
    out += [f"{ws}: {problem}" for problem in ledger.over_limits()]
    out += _answers(ws, calls, ledger, fig)
    want = (ledger.available, ledger.held, ledger.lifetime_used, ledger.lifetime_granted)
    got = (balance.available, balance.held, balance.lifetime_used, balance.lifetime_granted)
    if want != got:
        out.append(f"{ws}: balance {got}, model {want}")
    return out


def _answers(ws: str, calls: dict[str, list[Call]], ledger: m.Ledger, fig: Figures) -> list[str]:
    """Every answer a client received against the model's final word on its request id."""
    out: list[str] = []
    for rid, cs in calls.items():
        h = ledger.holds.get(rid)
        reserve = next((c for c in cs if c.kind == "reserve" and c.outcome == "ok"), None)
        for c in cs:
            where = f"{ws}/{rid} {c.kind}{c.params}"
            if c.outcome == "refused" and c.reason == "REQUEST_ID_REUSED":
                fig.reused += 1
                same = h is not None and _same(c, h)
                if same:
                    out.append(f"{where}: REQUEST_ID_REUSED for the parameters that took effect")
            if c.outcome != "ok":
                if c.reason == "HOLD_RELEASED" and (h is None or h.state != m.RELEASED):
                    out.append(f"{where}: HOLD_RELEASED but the hold is {h}")
                if c.reason == "HOLD_COMMITTED" and (h is None or h.state != m.COMMITTED):
                    out.append(f"{where}: HOLD_COMMITTED but the hold is {h}")
                continue
            if c.kind in ("grant", "confirm"):
                continue
            if h is None:
                out.append(f"{where}: answered {c.answer} but no hold exists")
                continue
            a = c.answer
            if str(a["hold_id"]) != str(h.hold_id):
                out.append(f"{where}: hold {a['hold_id']}, model {h.hold_id}")
            if c.kind == "reserve" and a["amount"] != h.amount:
                out.append(f"{where}: amount {a['amount']}, model {h.amount}")
            if c.kind in ("commit", "charge"):
                if not _same(c, h) or h.state != m.COMMITTED:
                    out.append(f"{where}: answered {a} but the model has {h}")
                    continue
                want = {"charged": h.charged, "released": h.released, "shortfall": h.shortfall}
                got = {k: a[k] for k in want}
                if want != got or (c.kind == "commit" and a["late"] != h.late):
                    out.append(f"{where}: answered {a}, model {h}")
                if c.kind == "commit" and reserve is not None:
                    ttl = reserve.params[1]
                    if h.late and c.done < reserve.sent + ttl - SLACK:
                        out.append(f"{where}: late before the hold's TTL could pass")
                    if not h.late and c.sent > reserve.done + ttl + SLACK:
                        out.append(f"{where}: not late although sent after the TTL")
            if c.kind == "release":
                # Releasing an expired hold is a no-op (0), and a late commit may follow it.
                # Over Stream the answer is the hold alone (released is None): its state.
                want_r = h.amount if h.state == m.RELEASED else 0
                want_s = m.RELEASED if h.state == m.RELEASED else m.EXPIRED
                if (
                    (h.state == m.COMMITTED and not h.late)
                    or a["state"] != want_s
                    or a["released"] not in (None, want_r)
                ):
                    out.append(f"{where}: released {a['released']} ({a['state']}), model {h}")
        if h is not None and h.state == m.COMMITTED:
            if any(c.kind in ("commit", "charge") and c.outcome == "ok" for c in cs):
                fig.committed += 1
                fig.late += int(h.late)
        elif any(c.kind in ("commit", "charge") and c.outcome == "ok" for c in cs):
            fig.lost += 1
            out.append(f"{ws}/{rid}: the client saw a charge the ledger does not have")
    return out


def _same(c: Call, h: m.Hold) -> bool:
    """Whether a call's parameters are those of the effect the ledger recorded."""
    if c.kind == "reserve":
        return h.kind == m.RESERVE and c.params[0] == h.amount
    if c.kind == "charge":
        return h.kind == m.CHARGE and c.params[0] == h.amount
    if c.kind == "commit":
        return h.kind == m.RESERVE and c.params[0] == h.charged + h.shortfall
    return True
