"""Catalog commands: catalog show|publish|diff, packages, estimate."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import typer
from rich.table import Table

from meter import errors as domain
from meter.catalog.document import parse_document
from meter.cli.remote import (
    REFUSED,
    Remote,
    client_command,
    enum_name,
    err,
    out,
    print_json,
    table,
)
from meterpb.v1 import catalog_pb2 as cpb

app = typer.Typer(help="The cost catalog: show, publish, diff.", no_args_is_help=True)

Document = Annotated[
    Path,
    typer.Argument(help="A TOML or JSON catalog document.", exists=True, dir_okay=False),
]

_UNITS = {
    "call": cpb.COST_UNIT_CALL,
    "platform": cpb.COST_UNIT_PLATFORM,
    "item": cpb.COST_UNIT_ITEM,
}


def _unit(value: int) -> str:
    return enum_name(cpb.CostUnit.Name(value), "COST_UNIT_")  # type: ignore[arg-type]


def _operations_table(title: str, operations: Any) -> Table:
    return table(
        title,
        ("operation", "min", "max", "per", "name"),
        map(_operation_row, sorted(operations, key=lambda o: o.operation)),
        right=("min", "max"),
    )


def _operation_row(op: cpb.Operation) -> list[str]:
    return [op.operation, str(op.min), str(op.max), "free" if op.free else _unit(op.unit),
            op.display_name]  # fmt: skip


@app.command()
@client_command()
def show(
    remote: Remote,
    version: Annotated[int, typer.Option("--version", help="0: the current version.")] = 0,
) -> None:
    """Show the cost rules of the current (or a given) catalog version.

    Example: meter catalog show --version 3
    """
    with remote.session() as meter:
        found = meter.list_operations(version)
    if remote.printed_json(found):
        return
    out.print(_operations_table(f"catalog version {found.catalog_version}", found.operations))


@app.command()
@client_command(timeout=30.0)
def publish(
    remote: Remote,
    document: Document,
    request_id: Annotated[
        str | None, typer.Option("--request-id", help="Idempotency key of the publication.")
    ] = None,
    description: Annotated[str, typer.Option("--description", help="What changed.")] = "",
) -> None:
    """Publish a catalog document as a new immutable version.

    Example: meter catalog publish catalog.toml --request-id catalog-2025-06
    """
    text = document.read_text()
    fmt = "json" if document.suffix.lower() == ".json" else "toml"
    with remote.session() as meter:
        done = meter.publish_catalog(
            text, format=fmt, description=description, request_id=request_id
        )
    if remote.printed_json(done):
        return
    out.print(
        f"published catalog version {done.catalog_version} ({len(done.operations)} operations)"
    )


@app.command()
@client_command()
def diff(remote: Remote, document: Document) -> None:
    """Show what publishing a document would change against the current version.

    Example: meter catalog diff catalog.toml
    """
    text = document.read_text()
    try:
        rules = parse_document(text, "json" if document.suffix.lower() == ".json" else "toml")
    except domain.MeterError as e:
        err.print(f"[red]invalid document:[/] {e.message}")
        raise typer.Exit(REFUSED) from None
    with remote.session() as meter:
        current = meter.list_operations()
    before = {op.operation: _shape(op.min, op.max, _unit(op.unit), op.display_name)
              for op in current.operations}  # fmt: skip
    after = {key: _shape(r.min, r.max, str(r.unit), r.display_name) for key, r in rules.items()}
    added = [{"operation": k, **after[k]} for k in sorted(after.keys() - before.keys())]
    removed = [{"operation": k, **before[k]} for k in sorted(before.keys() - after.keys())]
    changed = [
        {"operation": k, "before": before[k], "after": after[k]}
        for k in sorted(before.keys() & after.keys())
        if before[k] != after[k]
    ]
    if remote.json:
        return print_json(
            {
                "catalog_version": current.catalog_version,
                "added": added,
                "removed": removed,
                "changed": changed,
            }
        )
    n = len(added) + len(removed) + len(changed)
    out.print(f"against catalog version {current.catalog_version}: {n} changes")
    for a in added:
        out.print(f"[green]+ {a['operation']}[/]  {a['min']}-{a['max']} per {a['unit']}")
    for r in removed:
        out.print(f"[red]- {r['operation']}[/]  {r['min']}-{r['max']} per {r['unit']}")
    for c in changed:
        old, new = before[str(c["operation"])], after[str(c["operation"])]
        fields = [f"{f} {old[f]} -> {new[f]}" for f in ("min", "max", "unit", "display_name")
                  if old[f] != new[f]]  # fmt: skip
        out.print(f"[yellow]~ {c['operation']}[/]  " + ", ".join(fields))


def _shape(low: int, high: int, unit: str, name: str) -> dict[str, Any]:
    return {"min": low, "max": high, "unit": unit, "display_name": name}


@client_command()
def packages(remote: Remote) -> None:
    """List the credit packages.

    Example: meter packages --json
    """
    with remote.session() as meter:
        found = meter.list_packages()
    if remote.printed_json(cpb.ListPackagesResponse(packages=found)):
        return
    rows = ([p.name, str(p.credits), f"{p.price_cents / 100:,.2f} {p.currency}"] for p in found)
    out.print(table("packages", ("package", "credits", "price"), rows, right=("credits", "price")))


@client_command()
def estimate(
    remote: Remote,
    platforms: Annotated[int, typer.Option("--platforms", help="Number of platforms.")],
    days: Annotated[int, typer.Option("--days", help="Campaign duration in days.")],
    posts_per_week: Annotated[
        int, typer.Option("--posts-per-week", help="Per platform; 0: the usual frequency.")
    ] = 0,
    complexity: Annotated[
        str, typer.Option("--complexity", help="simple, standard or complex.")
    ] = "",
    strategy: Annotated[
        bool, typer.Option("--strategy-analysis", help="Include a strategy analysis.")
    ] = False,
    rss_items: Annotated[int, typer.Option("--rss-items", help="RSS items to process.")] = 0,
    workspace: Annotated[
        str, typer.Option("--workspace", help="Check whether this workspace can afford it.")
    ] = "",
) -> None:
    """Estimate a campaign's credits (and whether a workspace can afford it).

    Example: meter estimate --platforms 3 --days 14 --workspace ws-acme
    """
    if complexity and complexity not in ("simple", "standard", "complex"):
        raise typer.BadParameter("--complexity is simple, standard or complex")
    with remote.session() as meter:
        e = meter.estimate_campaign(
            platforms=platforms,
            days=days,
            posts_per_week=posts_per_week,
            complexity=complexity,
            strategy_analysis=strategy,
            rss_items=rss_items,
            workspace=workspace,
        )
    if remote.printed_json(e):
        return
    out.print(
        table(
            f"{platforms} platform(s), {days} days: {e.min}-{e.max} credits, about {e.expected}",
            ("operation", "count", "min", "expected", "max"),
            (
                [line.operation, str(line.count), str(line.min), str(line.expected), str(line.max)]
                for line in e.breakdown
            ),
            right=("count", "min", "expected", "max"),
        )
    )
    # The answer, not the flag, says whether sufficiency was asked about: without a
    # workspace the fields are unset and nothing is said about affording it.
    if e.HasField("sufficient"):
        if e.sufficient:
            out.print(f"{workspace} can afford it: {e.available} credits available")
        else:
            suggestion = (
                f"; the {e.suggested_package.name} package covers it"
                if e.HasField("suggested_package")
                else ""
            )
            out.print(
                f"{workspace} is short by {e.shortfall} credits ({e.available} available)"
                + suggestion
            )


def register(root: typer.Typer) -> None:
    root.add_typer(app, name="catalog")
    root.command()(packages)
    root.command()(estimate)
