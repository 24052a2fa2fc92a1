"""Budget commands (DESIGN.md §13): meter budgets set|delete|list."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Annotated

import typer
from rich.markup import escape

from meter.cli.remote import Remote, Workspace, client_command, enum_name, out, table, timestamp
from meterpb.v1 import meter_pb2 as pb

app = typer.Typer(
    help="Budgets: spend limits for a member (actor_id) or a label's values (project, team, "
    "api_key, agent...), per day, week, month or in total.\n\n"
    "Example: meter budgets set ws-acme --id apollo --key project --value apollo "
    "--period month --limit 500",
    no_args_is_help=True,
)

PERIODS = ("day", "week", "month", "total")
# "left" and "state" rather than longer words: the table fits 120 columns, resets on one line.
COLUMNS = (
    "budget", "key", "value", "period", "limit", "used", "left", "resets", "warn at", "state"
)  # fmt: skip
BudgetId = Annotated[str, typer.Argument(help="The budget's id.", show_default=False)]


def period_name(period: int) -> str:
    """LIMIT_PERIOD_DAY -> day."""
    return enum_name(pb.LimitPeriod.Name(period), "LIMIT_PERIOD_")  # type: ignore[arg-type]


def per_period(period: int) -> str:
    """The period in words: a day, a week, a month, or in total."""
    return "in total" if period == pb.LIMIT_PERIOD_TOTAL else f"a {period_name(period)}"


def standing(budget_id: str, period: int, limit: int, used: int, remaining: int) -> str:
    """One budget's standing in a sentence's words: "apollo: 12/500 a month, 488 left"."""
    return f"{budget_id}: {used}/{limit} {per_period(period)}, {remaining} left"


def parse_warn_at(values: list[str] | None) -> list[int]:
    """--warn-at 50 --warn-at 90, or --warn-at 50,90: percentages of the limit."""
    marks = [part.strip() for v in values or () for part in v.split(",") if part.strip()]
    try:
        found = [int(m.removesuffix("%")) for m in marks]
    except ValueError:
        raise typer.BadParameter("--warn-at takes percentages, e.g. 50,80,100") from None
    if any(not 1 <= m <= 100 for m in found):
        raise typer.BadParameter("--warn-at percentages are between 1 and 100")
    return found


@app.command("set")
@client_command()
def set_(
    remote: Remote,
    workspace: Workspace,
    budget_id: Annotated[
        str,
        typer.Option(
            "--id", help="The budget's id: setting it again replaces it.", show_default=False
        ),
    ],
    key: Annotated[
        str,
        typer.Option(
            "--key",
            help="actor_id, or a label key the requests carry (project, team, api_key, ...).",
            show_default=False,
        ),
    ],
    limit: Annotated[int, typer.Option("--limit", help="Credits per period.", show_default=False)],
    value: Annotated[
        str,
        typer.Option(
            "--value",
            help="One value of the key; omitted: every value gets a budget of this size.",
            show_default=False,
        ),
    ] = "",
    period: Annotated[
        str, typer.Option("--period", help="day, week, month (UTC) or total (never resets).")
    ] = "month",
    warn_at: Annotated[
        list[str] | None,
        typer.Option(
            "--warn-at",
            help="budget.threshold at these percentages (repeatable or 50,90; default 80).",
            show_default=False,
        ),
    ] = None,
    disabled: Annotated[
        bool, typer.Option("--disabled", help="Keep the budget but refuse nothing by it.")
    ] = False,
) -> None:
    """Create or replace a budget.

    Example: meter budgets set ws-acme --id teams --key team --period week --limit 200
    """
    if period.lower() not in PERIODS:
        raise typer.BadParameter(f"--period must be one of {', '.join(PERIODS)}")
    marks = parse_warn_at(warn_at)
    with remote.session() as meter:
        b = meter.set_budget(
            workspace, budget_id, key=key, value=value, period=period, limit=limit,
            warn_at=marks, enabled=not disabled,
        )  # fmt: skip
    if remote.printed_json(b):
        return
    if b.scope_value:
        whom, spent = f"{b.scope_key}={b.scope_value}", f"used {b.used}, {b.remaining} left"
    else:
        whom, spent = f"each {b.scope_key}", f"the most any has used: {b.used}"
    state = "" if b.enabled else " (disabled: it refuses nothing)"
    out.print(
        f"budget {escape(b.budget_id)} of {workspace}: {escape(whom)} may spend {b.limit} "
        f"{per_period(b.period)}; {spent}{state}",
        soft_wrap=True,
    )


@app.command()
@client_command()
def delete(remote: Remote, workspace: Workspace, budget_id: BudgetId) -> None:
    """Delete a budget (a member limit's too: member:<actor or *>:<period>).

    Example: meter budgets delete ws-acme apollo
    """
    with remote.session() as meter:
        deleted = meter.delete_budget(workspace, budget_id)
    if remote.printed_json(pb.DeleteBudgetResponse(deleted=deleted)):
        return
    if deleted:
        out.print(f"deleted budget {escape(budget_id)} of {workspace}")
    else:
        out.print(f"{workspace} has no budget {escape(budget_id)}: nothing deleted")


@app.command("list")
@client_command()
def list_(remote: Remote, workspace: Workspace) -> None:
    """List a workspace's budgets with what each has used this period and what is left; a
    budget for every value of its key gets one row per value that has spent.

    Example: meter budgets list ws-acme --json
    """
    with remote.session() as meter:
        found = meter.budgets(workspace)
    if remote.printed_json(pb.ListBudgetsResponse(budgets=found)):
        return
    if not found:
        return out.print(f"{workspace} has no budgets: members and labels may spend the balance")
    out.print(
        table(
            f"budgets of {workspace}",
            COLUMNS,
            (row for b in found for row in _rows(b)),
            right=("limit", "used", "left"),
            no_wrap=("resets",),
        )
    )


def _rows(b: pb.Budget) -> Iterator[list[str]]:
    """A budget's row, then for a budget of every value one row per value that has spent."""
    resets = timestamp(b.resets_at) or "never"
    marks = ", ".join(f"{w}%" for w in b.warn_at)
    yield [
        escape(b.budget_id), escape(b.scope_key), escape(b.scope_value) or "(every value)",
        period_name(b.period), str(b.limit), str(b.used), str(b.remaining), resets, marks,
        "on" if b.enabled else "off",
    ]  # fmt: skip
    for v in b.values:
        yield ["", "", f"  {escape(v.value)}", "", "", str(v.used), str(v.remaining), "", "", ""]


def register(root: typer.Typer) -> None:
    root.add_typer(app, name="budgets")
