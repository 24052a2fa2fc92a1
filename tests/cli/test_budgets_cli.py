"""Budgets, thresholds, the runway and usage by label on the command line, against the real
server: --json matches the RPCs, bad input exits 2 before any call, refusals exit 1."""

from __future__ import annotations

import json
from datetime import UTC, datetime

from google.protobuf import json_format

from meterpb.v1 import meter_pb2 as pb
from tests.cli.test_cli import meter
from tests.support import balance, grant, rid


def cells(out: str) -> list[list[str]]:
    """The rows of the table a command printed, each a list of its cells' text."""
    return [
        [c.strip() for c in line.strip().strip("│").split("│")]
        for line in out.splitlines()
        if line.startswith("│")
    ]


async def test_budgets_set_list_and_delete(app, stub, ws):
    await grant(stub, ws, 100)
    code, out, _ = await meter(
        app, "budgets", "set", ws, "--id", "apollo", "--key", "project", "--value", "apollo",
        "--period", "week", "--limit", "40", "--warn-at", "50,75", "--warn-at", "90", "--json",
    )  # fmt: skip
    assert 0 == code
    set_ = json_format.ParseDict(json.loads(out), pb.Budget())
    assert ("project", "apollo", pb.LIMIT_PERIOD_WEEK, 40, [50, 75, 90], True) == (
        set_.scope_key, set_.scope_value, set_.period, set_.limit, list(set_.warn_at),
        set_.enabled,
    )  # fmt: skip
    code, out, _ = await meter(
        app, "budgets", "set", ws, "--id", "teams", "--key", "team", "--period", "total",
        "--limit", "30", "--disabled",
    )  # fmt: skip
    assert (0, True) == (code, "each team may spend 30 in total" in out and "disabled" in out)
    for labels, amount in (({"project": "apollo", "team": "ml"}, 12), ({"team": "web"}, 3)):
        await stub.Charge(
            pb.ChargeRequest(
                workspace_id=ws, request_id=rid(), operation="content.optimize", amount=amount,
                labels=labels,
            )
        )  # fmt: skip

    code, out, _ = await meter(app, "budgets", "list", ws, "--json")
    listed = json_format.ParseDict(json.loads(out), pb.ListBudgetsResponse())
    assert (0, await stub.ListBudgets(pb.ListBudgetsRequest(workspace_id=ws))) == (code, listed)
    code, out, _ = await meter(app, "budgets", "list", ws)
    assert 0 == code
    rows = cells(out)
    assert ["apollo", "project", "apollo", "week", "40", "12", "28"] == rows[0][:7]
    assert ("50%, 75%, 90%", "on") == (rows[0][8], rows[0][9])
    # The budget of every team has a row of its own per team that spent.
    assert [
        ["teams", "team", "(every value)", "total", "30", "12", "18", "never", "80%", "off"],
        ["", "", "ml", "", "", "12", "18", "", "", ""],
        ["", "", "web", "", "", "3", "27", "", "", ""],
    ] == rows[1:]

    code, out, _ = await meter(app, "budgets", "delete", ws, "apollo")
    assert (0, True) == (code, "deleted budget apollo" in out)
    code, out, _ = await meter(app, "budgets", "delete", ws, "apollo", "--json")
    assert (0, {"deleted": False}) == (code, json.loads(out))
    assert ["teams"] == [
        b.budget_id
        for b in (await stub.ListBudgets(pb.ListBudgetsRequest(workspace_id=ws))).budgets
    ]


async def test_budgets_set_refuses_bad_input(app, stub, ws):
    await grant(stub, ws, 10)
    base = ["budgets", "set", ws, "--id", "b", "--limit", "5"]
    code, _, err = await meter(app, *base, "--key", "project", "--period", "year")
    assert (2, True) == (code, "--period must be one of day, week, month, total" in err)
    code, _, err = await meter(app, *base, "--key", "project", "--warn-at", "half")
    assert (2, True) == (code, "--warn-at takes percentages" in err)
    code, _, err = await meter(app, *base, "--key", "Project!")
    assert (1, True, True) == (code, "INVALID_ARGUMENT" in err, "budget.scope_key" in err)
    code, _, err = await meter(app, "budgets", "set", ws, "--id", "b", "--key", "project")
    assert (2, True) == (code, "--limit" in err)
    assert [] == list((await stub.ListBudgets(pb.ListBudgetsRequest(workspace_id=ws))).budgets)


async def test_balance_shows_the_runway_and_thresholds_set_runway_days(app, stub, ws):
    await grant(stub, ws, 100)
    code, out, _ = await meter(app, "balance", ws)
    assert (0, True, True) == (code, "no burn yet" in out, "below 7 days" in out)

    code, out, _ = await meter(app, "thresholds", ws, "--runway-days", "60", "--json")
    found = json_format.ParseDict(json.loads(out), pb.AlertThresholds())
    assert (0, 100, 10, 60) == (code, found.low, found.critical, found.runway_days)
    code, out, _ = await meter(app, "thresholds", ws, "--low", "50")
    assert 0 == code
    assert "low below 50, critical below 10, runway low below 60 days" in out
    await stub.Charge(
        pb.ChargeRequest(workspace_id=ws, request_id=rid(), operation="content.optimize", amount=14)
    )

    code, out, _ = await meter(app, "balance", ws)

    assert 0 == code
    rows = dict(cells(out))
    b = await balance(stub, ws)
    assert "2.0 (7 days), 0.5 (30 days)" == rows["burn per day"]
    days, _, zero = rows["days left"].partition(" (zero at ")
    assert "43.0" == days
    # zero_at moves with the clock: the command read it a moment before this test did.
    printed = datetime.fromisoformat(zero.rstrip(")")).replace(tzinfo=UTC)
    assert abs((b.runway.zero_at.ToDatetime(tzinfo=UTC) - printed).total_seconds()) < 10
    assert "below 60 days" == rows["runway alert"]
    code, out, _ = await meter(app, "balance", ws, "--json")
    assert 43 == json.loads(out)["runway"]["days_left"]
    code, _, err = await meter(app, "thresholds", ws, "--critical", "80")
    assert (1, True) == (code, "critical" in err)


async def test_usage_by_label_shows_each_values_budgets(app, stub, ws):
    await grant(stub, ws, 100)
    await stub.SetBudget(
        pb.SetBudgetRequest(
            workspace_id=ws,
            budget=pb.Budget(
                budget_id="each", scope_key="project", period=pb.LIMIT_PERIOD_MONTH, limit=30
            ),
        )
    )
    await stub.Charge(
        pb.ChargeRequest(
            workspace_id=ws, request_id=rid(), operation="content.optimize", amount=12,
            labels={"project": "zeus"},
        )
    )  # fmt: skip
    await stub.Charge(
        pb.ChargeRequest(workspace_id=ws, request_id=rid(), operation="content.optimize", amount=2)
    )

    code, out, _ = await meter(app, "usage", ws, "--by", "label:project", "--json")
    expected = await stub.GetUsage(
        pb.GetUsageRequest(workspace_id=ws, group_by=pb.USAGE_GROUPING_LABEL, label_key="project")
    )
    assert (0, expected) == (code, json_format.ParseDict(json.loads(out), pb.GetUsageResponse()))
    code, out, _ = await meter(app, "usage", ws, "--by", "label:project")
    assert 0 == code
    assert f"usage of {ws} by project" in out
    assert [
        ["zeus", "12", "1", "0", "each: 12/30 a month, 18 left"],
        ["(no project)", "2", "1", "0", ""],
        ["total", "14", "2", "0", ""],
    ] == cells(out)

    code, _, err = await meter(app, "usage", ws, "--by", "label")
    assert (2, True) == (code, "label:project" in err)
    code, _, err = await meter(app, "usage", ws, "--by", "label:Bad!")
    assert (1, True) == (code, "label_key" in err)
