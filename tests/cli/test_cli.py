"""The `meter` command line against the real server: --json matches the RPCs, exit codes mean."""

from __future__ import annotations

import asyncio
import csv
import json
import sys
from pathlib import Path

import pytest
from google.protobuf import json_format

from meterpb.v1 import catalog_pb2 as cpb
from meterpb.v1 import meter_pb2 as pb
from tests.support import balance, grant, reserve, rid

METER = str(Path(sys.executable).with_name("meter"))


async def meter(app, *args: str, target: str | None = None) -> tuple[int, str, str]:
    """Run `meter ARGS --target` the session's server; return (exit code, stdout, stderr)."""
    proc = await asyncio.create_subprocess_exec(
        METER,
        *args,
        "--target",
        target or f"127.0.0.1:{app.port}",
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
        env={"PATH": "/usr/bin:/bin", "COLUMNS": "200"},
    )
    out, err = await proc.communicate()
    assert proc.returncode is not None
    return proc.returncode, out.decode(), err.decode()


async def test_balance_json_is_the_get_balance_result(app, stub, ws):
    await grant(stub, ws, 40)
    await reserve(stub, ws, rid(), 15)

    code, out, _ = await meter(app, "balance", ws, "--json")

    assert 0 == code
    assert await balance(stub, ws) == json_format.ParseDict(json.loads(out), pb.Balance())
    assert 25 == json.loads(out)["available"]  # int64 as a JSON number


async def test_grant_by_package_prints_the_grant_result(app, stub, ws):
    code, out, _ = await meter(app, "grant", ws, "--package", "Starter", "--request-id", "pay-1")

    assert 0 == code
    assert "granted 100 credits" in out
    code, out, _ = await meter(
        app, "grant", ws, "--package", "Starter", "--request-id", "pay-1", "--json"
    )
    assert 0 == code
    replay = json_format.ParseDict(json.loads(out), pb.GrantCreditsResponse())
    assert (100, 100) == (replay.entry.amount, replay.balance.available)  # replayed, not doubled


async def test_history_json_has_every_page_and_the_csv_export_every_entry(app, stub, ws, tmp_path):
    for n in range(1, 8):
        await grant(stub, ws, n)
    expected = await stub.ListTransactions(pb.ListTransactionsRequest(workspace_id=ws))
    export = tmp_path / "history.csv"

    code, out, _ = await meter(
        app, "history", ws, "--kind", "grant", "--json", "--csv", str(export)
    )

    assert 0 == code
    found = json_format.ParseDict(json.loads(out), pb.ListTransactionsResponse())
    assert list(expected.entries) == list(found.entries)
    with export.open() as f:
        rows = list(csv.DictReader(f))
    assert ["+7", "+6", "+5", "+4", "+3", "+2", "+1"] == [r["amount"] for r in rows]


async def test_history_filters_by_operation_and_limit(app, stub, ws):
    await grant(stub, ws, 100)
    for op in ("strategy.analyze", "content.generate_post", "strategy.analyze"):
        await stub.Charge(pb.ChargeRequest(workspace_id=ws, request_id=rid(), operation=op))

    code, out, _ = await meter(
        app, "history", ws, "--operation", "strategy.analyze", "--limit", "1", "--json"
    )

    assert 0 == code
    entries = json.loads(out)["entries"]
    assert ["strategy.analyze"] == [e["operation"] for e in entries]


async def test_holds_json_lists_the_holds_in_the_state_asked(app, stub, ws):
    await grant(stub, ws, 50)
    held = await reserve(stub, ws, rid(), 5)
    gone = await reserve(stub, ws, rid(), 6)
    await stub.Release(pb.ReleaseRequest(workspace_id=ws, request_id=gone.request_id))

    code, out, _ = await meter(app, "holds", ws, "--state", "held", "--json")

    assert 0 == code
    found = json_format.ParseDict(json.loads(out), pb.ListHoldsResponse())
    assert [held] == list(found.holds)


async def test_catalog_show_json_is_the_current_catalog(app, catalog):
    expected = await catalog.ListOperations(cpb.ListOperationsRequest())

    code, out, _ = await meter(app, "catalog", "show", "--json")

    assert 0 == code
    assert expected == json_format.ParseDict(json.loads(out), cpb.ListOperationsResponse())


async def test_catalog_diff_names_what_a_document_would_change(app, catalog, tmp_path):
    current = await catalog.ListOperations(cpb.ListOperationsRequest())
    first = current.operations[0]
    doc = tmp_path / "catalog.json"
    doc.write_text(
        json.dumps(
            {
                "operations": {
                    first.operation: {
                        "display_name": first.display_name,
                        "min": first.min,
                        "max": first.max + 1,
                        "unit": cpb.CostUnit.Name(first.unit).removeprefix("COST_UNIT_").lower(),
                    },
                    "video.render": {"display_name": "Video", "min": 5, "max": 9, "unit": "call"},
                }
            }
        )
    )

    code, out, err = await meter(app, "catalog", "diff", str(doc), "--json")

    assert 0 == code, err
    changes = json.loads(out)
    assert ["video.render"] == [a["operation"] for a in changes["added"]]
    assert [first.operation] == [c["operation"] for c in changes["changed"]]
    assert first.max + 1 == changes["changed"][0]["after"]["max"]
    assert len(current.operations) - 1 == len(changes["removed"])


async def test_estimate_json_is_the_estimate_campaign_result(app, catalog, stub, ws):
    await grant(stub, ws, 5)
    request = cpb.EstimateCampaignRequest(platforms=2, duration_days=14, workspace_id=ws)
    expected = await catalog.EstimateCampaign(request)

    code, out, _ = await meter(
        app, "estimate", "--platforms", "2", "--days", "14", "--workspace", ws, "--json"
    )

    assert 0 == code
    assert expected == json_format.ParseDict(json.loads(out), cpb.EstimateCampaignResponse())
    assert (False, True) == (expected.sufficient, "sufficient" in json.loads(out))


async def test_estimate_without_a_workspace_says_nothing_about_affording_it(app, catalog):
    request = cpb.EstimateCampaignRequest(platforms=2, duration_days=14)
    expected = await catalog.EstimateCampaign(request)

    code, out, _ = await meter(app, "estimate", "--platforms", "2", "--days", "14")
    json_code, json_out, _ = await meter(
        app, "estimate", "--platforms", "2", "--days", "14", "--json"
    )

    assert (0, 0) == (code, json_code)
    assert f"2 platform(s), 14 days: {expected.min}-{expected.max} credits" in out
    assert [] == [word for word in ("afford", "short", "available") if word in out]
    fields = json.loads(json_out)
    assert [] == [
        f for f in ("sufficient", "shortfall", "available", "suggested_package") if f in fields
    ]
    assert expected == json_format.ParseDict(fields, cpb.EstimateCampaignResponse())


async def test_estimate_for_a_workspace_says_whether_it_can_afford_it(app, stub, ws):
    await grant(stub, ws, 500)

    code, out, _ = await meter(
        app, "estimate", "--platforms", "2", "--days", "14", "--workspace", ws
    )
    json_code, json_out, _ = await meter(
        app, "estimate", "--platforms", "2", "--days", "14", "--workspace", ws, "--json"
    )

    assert (0, 0) == (code, json_code)
    assert f"{ws} can afford it: 500 credits available" in out
    fields = json.loads(json_out)
    assert (True, 0, 500) == (fields["sufficient"], fields["shortfall"], fields["available"])


async def test_audit_json_of_one_workspace_finds_nothing_wrong(app, stub, ws):
    await grant(stub, ws, 30)
    await reserve(stub, ws, rid(), 7)

    code, out, _ = await meter(app, "audit", ws, "--json")

    assert 0 == code
    report = json_format.ParseDict(json.loads(out), pb.AuditResponse())
    assert (1, []) == (report.workspaces_checked, list(report.discrepancies))


async def test_a_refused_call_exits_1_and_prints_the_reason(app, stub, ws):
    await grant(stub, ws, 5)

    code, _, err = await meter(
        app, "adjust", ws, "--amount", "-50", "--reason", "typo", "--request-id", rid()
    )

    assert 1 == code
    assert "INSUFFICIENT_CREDITS" in err
    assert 5 == (await balance(stub, ws)).available


async def test_a_refusal_prints_the_servers_words_as_they_are(app):
    """A message is text, not rich markup: its "[A-Za-z0-9._:-]" is printed, not swallowed."""
    code, _, err = await meter(app, "balance", "not an id!")

    assert 1 == code
    assert "[A-Za-z0-9._:-]" in err


async def test_an_unreachable_server_exits_3(app):
    code, _, err = await meter(app, "balance", "ws-x", "--timeout", "0.5", target="127.0.0.1:1")

    assert 3 == code
    assert "cannot reach Meter at 127.0.0.1:1" in err


async def test_a_usage_error_exits_2(app, ws):
    code, _, _ = await meter(app, "grant", ws, "--request-id", "r-1")

    assert 2 == code


async def test_every_command_shows_an_example_in_its_help(app):
    commands = [
        ["balance"], ["grant"], ["adjust"], ["history"], ["usage"], ["holds"], ["audit"],
        ["packages"], ["estimate"], ["catalog", "show"], ["catalog", "publish"], ["events"],
        ["webhooks", "add"], ["webhooks", "list"], ["webhooks", "replay"],
        ["catalog", "diff"], ["serve"], ["migrate"], ["confirm"], ["void"], ["limits"],
        ["topup"], ["thresholds"], ["budgets", "set"], ["budgets", "delete"], ["budgets", "list"],
    ]  # fmt: skip

    async def help_of(command: list[str]) -> str:
        proc = await asyncio.create_subprocess_exec(
            METER, *command, "--help", stdout=asyncio.subprocess.PIPE, env={"COLUMNS": "200"}
        )
        out, _ = await proc.communicate()
        return out.decode().lower()

    helps = await asyncio.gather(*(help_of(c) for c in commands))

    assert [] == [" ".join(c) for c, h in zip(commands, helps, strict=True) if "example" not in h]


async def test_usage_by_day_json_is_the_get_usage_result_and_the_table_has_a_chart(app, stub, ws):
    await grant(stub, ws, 100)
    for amount in (3, 4):
        await stub.Charge(
            pb.ChargeRequest(
                workspace_id=ws, request_id=rid(), operation="strategy.analyze", amount=amount
            )
        )
    request = pb.GetUsageRequest(workspace_id=ws, group_by=pb.USAGE_GROUPING_DAY)

    (code, out, err), (table_code, table, _) = await asyncio.gather(
        meter(app, "usage", ws, "--by", "day", "--json"), meter(app, "usage", ws, "--by", "day")
    )

    if code == 1 and "does not serve" in err:
        pytest.skip("GetUsage is not served by this server yet")
    assert (0, 0) == (code, table_code)
    expected = await stub.GetUsage(request)
    assert expected == json_format.ParseDict(json.loads(out), pb.GetUsageResponse())
    assert 7 == expected.total_credits
    assert "█" in table
