"""`meter usage`: credits used, grouped by operation, actor, day, week or a label's values."""

from __future__ import annotations

from typing import Annotated

import typer
from rich.markup import escape
from rich.table import Table

from meter.cli import charts
from meter.cli.budgets import standing
from meter.cli.remote import (
    Remote,
    Since,
    Until,
    Workspace,
    client_command,
    out,
    when,
)
from meterpb.v1 import meter_pb2 as pb

GROUPINGS = ("operation", "actor", "day", "week")


@client_command(timeout=30.0)
def usage(
    remote: Remote,
    workspace: Workspace,
    by: Annotated[
        str,
        typer.Option(
            "--by",
            help="operation, actor, day, week, or label:KEY (the values of the label KEY, "
            "e.g. label:project).",
            show_default=False,
        ),
    ],
    since: Since = None,
    until: Until = None,
) -> None:
    """Credits used, grouped by operation, actor (member), day, week or a label's values;
    days get a chart, members and label values their budgets.

    Example: meter usage ws-acme --by label:project --since 2025-06-02
    """
    grouping, _, label_key = by.partition(":")
    if grouping == "label" and not label_key:
        raise typer.BadParameter("--by label needs its key: label:project, label:team, ...")
    if grouping not in (*GROUPINGS, "label") or (label_key and grouping != "label"):
        raise typer.BadParameter("--by is operation, actor, day, week or label:KEY")
    with remote.session() as meter:
        report = meter.usage(
            workspace, grouping, label_key=label_key, since=when(since), until=when(until)
        )
    if remote.printed_json(report):
        return
    print_usage(workspace, grouping, label_key, report)


def print_usage(workspace: str, grouping: str, label_key: str, report: pb.GetUsageResponse) -> None:
    timed = grouping in ("day", "week")
    # By actor or label the rows are values that budgets govern: what they hold and their budgets.
    governed = grouping in ("actor", "label")
    name = label_key or grouping
    empty = f"(no {name})" if label_key else "-"
    rows = [
        (r.period_start.ToDatetime().strftime("%Y-%m-%d") if timed else escape(r.key) or empty, r)
        for r in report.rows
    ]
    t = Table(title=f"usage of {workspace} by {escape(name)}", title_justify="left")
    t.add_column(escape(name))
    t.add_column("credits", justify="right")
    t.add_column("charges", justify="right")
    if governed:
        t.add_column("held now", justify="right")
        t.add_column("budgets")
    for label, r in rows:
        cells = [label, str(r.credits), str(r.count)]
        if governed:
            cells += [str(r.held), _budgets(r)]
        t.add_row(*cells)
    total = ["total", str(report.total_credits), str(report.total_count)]
    if governed:
        total += [str(sum(r.held for r in report.rows)), ""]
    t.add_row(*total, style="bold")
    out.print(t)
    if timed and rows:
        out.print()
        for line in charts.bars([(label, r.credits) for label, r in rows]):
            out.print(line)


def _budgets(r: pb.UsageRow) -> str:
    """A value's budgets (a member's limits among them): "apollo: 12/500 a month, 488 left; ..."."""
    return "; ".join(
        escape(standing(b.budget_id, b.period, b.limit, b.used, b.remaining)) for b in r.budgets
    )
