"""The credit-policy commands against the real server: --json matches the RPCs."""

from __future__ import annotations

import json

from google.protobuf import json_format

from meterpb.v1 import meter_pb2 as pb
from tests.cli.test_cli import meter
from tests.support import balance, fails, grant, rid


async def test_a_pending_grant_shows_as_pending_until_confirm(app, stub, ws):
    code, out, _ = await meter(
        app, "grant", ws, "--amount", "70", "--request-id", "pay-7", "--pending"
    )
    assert (0, True) == (code, "pending" in out and "meter confirm" in out)
    code, out, _ = await meter(app, "balance", ws)
    assert (0, True, True) == (code, "pending" in out, "70" in out)
    code, out, _ = await meter(app, "confirm", ws, "pay-7", "--json")
    done = json_format.ParseDict(json.loads(out), pb.GrantCreditsResponse())
    assert (0, 70, 70) == (code, done.entry.amount, done.balance.available)
    code, _, err = await meter(app, "void", ws, "pay-7")
    assert (1, True) == (code, "GRANT_CONFIRMED" in err)


async def test_grant_with_a_category_and_priority_and_the_balance_by_category(app, stub, ws):
    code, _, _ = await meter(
        app, "grant", ws, "--amount", "20", "--request-id", rid(), "--category", "promotional",
        "--priority", "5",
    )  # fmt: skip
    assert 0 == code
    await grant(stub, ws, 30)
    code, out, _ = await meter(app, "balance", ws, "--json")
    got = json_format.ParseDict(json.loads(out), pb.Balance())
    assert got == await balance(stub, ws)
    assert {pb.CREDIT_CATEGORY_PROMOTIONAL: 20, pb.CREDIT_CATEGORY_MANUAL: 30} == {
        c.category: c.available for c in got.by_category
    }


async def test_limits_sets_lists_and_removes_a_member_limit(app, stub, ws):
    await grant(stub, ws, 100)
    code, out, _ = await meter(
        app, "limits", ws, "--member", "ana", "--period", "day", "--limit", "5", "--json"
    )
    assert 0 == code
    assert [("ana", "5")] == [(x["actor_id"], str(x["limit"])) for x in json.loads(out)]
    f = await fails(
        stub.Reserve(pb.ReserveRequest(workspace_id=ws, request_id=rid(), amount=6, actor_id="ana"))
    )
    assert "MEMBER_LIMIT_REACHED" == f.reason
    code, out, _ = await meter(app, "limits", ws)
    assert (0, True, True) == (code, "ana" in out, "day" in out)
    code, out, _ = await meter(app, "limits", ws, "--member", "ana", "--period", "day", "--remove")
    assert (0, True) == (code, "no member limits" in out)
    code, _, _ = await meter(
        app, "limits", ws, "--member", "ana", "--period", "year", "--limit", "1"
    )
    assert 2 == code


async def test_topup_sets_shows_and_reports_a_failure(app, stub, ws):
    await grant(stub, ws, 10)
    code, out, _ = await meter(
        app, "topup", ws, "--threshold", "50", "--package", "Basic", "--monthly-limit", "2",
        "--json",
    )  # fmt: skip
    rule = json_format.ParseDict(json.loads(out), pb.AutoTopUp())
    assert (0, f"topup:{ws}:1") == (code, rule.outstanding_request_id)
    assert rule == await stub.GetAutoTopUp(pb.GetAutoTopUpRequest(workspace_id=ws))
    code, out, _ = await meter(app, "topup", ws, "--failed", rule.outstanding_request_id)
    assert (0, True) == (code, "failures in a row 1" in out)
    code, out, _ = await meter(app, "topup", ws, "--disable")
    assert (0, True) == (code, "auto top-up off" in out)
