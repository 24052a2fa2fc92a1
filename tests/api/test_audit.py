"""Audit recomputes balances from the journal, lots and holds, and reports disagreements."""

from __future__ import annotations

from meterpb.v1 import meter_pb2 as pb
from tests.support import fails, grant, reserve, rid


async def _busy_workspace(stub, ws):
    await grant(stub, ws, 100)
    await grant(stub, ws, 50)
    job = rid()
    await reserve(stub, ws, job, 30)
    await stub.Commit(pb.CommitRequest(workspace_id=ws, request_id=job, amount=40))
    await reserve(stub, ws, rid(), 10)
    gone = rid()
    await reserve(stub, ws, gone, 5)
    await stub.Release(pb.ReleaseRequest(workspace_id=ws, request_id=gone))
    await stub.Charge(pb.ChargeRequest(workspace_id=ws, request_id=rid(), amount=3))
    await stub.AdjustCredits(
        pb.AdjustCreditsRequest(workspace_id=ws, request_id=rid(), amount=-2, reason="correction")
    )


async def test_an_honest_workspace_audits_clean(stub, ws):
    await _busy_workspace(stub, ws)
    report = await stub.Audit(pb.AuditRequest(workspace_id=ws))
    assert (1, []) == (report.workspaces_checked, list(report.discrepancies))


async def test_a_balance_changed_behind_the_journal_is_reported(stub, ws, db):
    await _busy_workspace(stub, ws)
    db.execute("UPDATE workspaces SET balance = balance + 5 WHERE workspace_id = :w", w=ws)
    report = await stub.Audit(pb.AuditRequest(workspace_id=ws))
    checks = {d.check for d in report.discrepancies}
    assert {"balance_vs_journal", "balance_vs_last_entry", "lots_vs_available"} <= checks
    d = next(d for d in report.discrepancies if d.check == "balance_vs_journal")
    assert (d.expected + 5, ws) == (d.actual, d.workspace_id)


async def test_a_lot_drained_by_hand_is_reported(stub, ws, db):
    await _busy_workspace(stub, ws)
    db.execute(
        "UPDATE lots SET remaining = remaining - 1 WHERE workspace_id = :w AND remaining > 0", w=ws
    )
    report = await stub.Audit(pb.AuditRequest(workspace_id=ws))
    assert "lots_vs_available" in {d.check for d in report.discrepancies}


async def test_a_hold_inflated_by_hand_is_reported(stub, ws, db):
    await _busy_workspace(stub, ws)
    db.execute("UPDATE holds SET amount = amount + 1 WHERE workspace_id = :w AND state = 1", w=ws)
    report = await stub.Audit(pb.AuditRequest(workspace_id=ws))
    assert {"held_vs_holds", "hold_draws"} <= {d.check for d in report.discrepancies}


async def test_a_second_charge_for_one_request_is_reported(stub, ws, db):
    await _busy_workspace(stub, ws)
    db.execute(
        "INSERT INTO journal (workspace_id, entry_id, kind, amount, balance_after, request_id, "
        "created_at) SELECT workspace_id, entry_id + 1000, kind, 0, balance_after, request_id, "
        "now() FROM journal WHERE workspace_id = :w AND kind = 2 ORDER BY entry_id DESC LIMIT 1",
        w=ws,
    )
    report = await stub.Audit(pb.AuditRequest(workspace_id=ws))
    assert "double_charge" in {d.check for d in report.discrepancies}


async def test_auditing_every_workspace_finds_only_the_planted_discrepancy(stub, ws, db):
    await _busy_workspace(stub, ws)
    other = f"{ws}-other"
    await _busy_workspace(stub, other)
    db.execute(
        "UPDATE workspaces SET lifetime_used = lifetime_used + 1 WHERE workspace_id = :w", w=other
    )
    report = await stub.Audit(pb.AuditRequest())
    assert report.workspaces_checked >= 2
    mine = [d for d in report.discrepancies if d.workspace_id in (ws, other)]
    assert [(other, "lifetime_used")] == [(d.workspace_id, d.check) for d in mine]


async def test_auditing_an_unknown_workspace_is_not_found(stub):
    f = await fails(stub.Audit(pb.AuditRequest(workspace_id="nobody-" + rid())))
    assert ("NOT_FOUND", "WORKSPACE_NOT_FOUND") == (f.code.name, f.reason)
