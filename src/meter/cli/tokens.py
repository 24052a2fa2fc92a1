"""`meter token`: make, list and revoke the principals that may call the server.

These commands talk to the database directly (like `migrate`), not to a server: they are
how the first principal comes to exist, before any server will accept a call.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Annotated, TypeVar

import typer
from rich.console import Console
from rich.table import Table

from meter import errors
from meter.auth.model import NAME_RE, Principal, Role, new_token, token_hash
from meter.cli.database import DataDir
from meter.ledger.validation import ID_RE

T = TypeVar("T")

token_app = typer.Typer(
    help="Principals and their bearer tokens (stored only as hashes).", no_args_is_help=True
)
err = Console(stderr=True, highlight=False)

DatabaseUrl = Annotated[
    str | None,
    typer.Option(
        "--database-url",
        envvar="METER_DATABASE_URL",
        help="PostgreSQL URL; without it the embedded PostgreSQL in --data-dir.",
    ),
]


def _run(database_url: str | None, data_dir: Path | None, work: Callable[..., Awaitable[T]]) -> T:
    """Migrate (so a token can be made before the first `serve`) and run work on a repo."""
    from meter import logs
    from meter.cli import database
    from meter.storage import db
    from meter.storage.principals_repo import PrincipalRepo

    logs.configure("warning")
    url = database.resolve("token", database_url, data_dir)
    with database.reaching("token"):
        db.migrate(url)

    async def main() -> T:
        engine = db.async_engine(url, pool_size=1)
        try:
            return await work(PrincipalRepo(engine))
        finally:
            await engine.dispose()

    try:
        with database.reaching("token"):
            return asyncio.run(main())
    except errors.MeterError as e:
        err.print(f"[red]refused:[/] {e.reason}: {e.message}")
        raise typer.Exit(1) from None


@token_app.command()
def create(
    role: Annotated[Role, typer.Option("--role", help="worker, planner, app, billing or admin.")],
    name: Annotated[str, typer.Option("--name", help="Who the token is for (unique).")],
    workspace: Annotated[
        list[str] | None,
        typer.Option("--workspace", help="Limit to this workspace (repeat); default all."),
    ] = None,
    cert_subject: Annotated[
        str | None,
        typer.Option(
            "--cert-subject",
            help="A client certificate subject (RFC 2253, e.g. 'CN=worker-1') that stands for "
            "this principal over mutual TLS when no token is sent.",
        ),
    ] = None,
    database_url: DatabaseUrl = None,
    data_dir: DataDir = None,
) -> None:
    """Make a principal and print its token once (example: meter token create --role worker
    --name gen-pool --workspace ws-acme)."""
    if not NAME_RE.fullmatch(name):
        raise typer.BadParameter("1-64 characters of [A-Za-z0-9._:@-]", param_hint="--name")
    for w in workspace or ():
        if not ID_RE.fullmatch(w):
            raise typer.BadParameter(f"{w!r} is not a workspace id", param_hint="--workspace")
    if cert_subject is not None and not (0 < len(cert_subject) <= 1024 and "=" in cert_subject):
        raise typer.BadParameter("a subject like 'CN=worker-1'", param_hint="--cert-subject")
    token = new_token()
    p = _run(
        database_url,
        data_dir,
        lambda repo: repo.create(name, role, workspace or (), token_hash(token), cert_subject),
    )
    err.print(
        f"principal {p.name} ({p.role.value}, id {p.id}) created. "
        "The token below is shown only this once; store it now:"
    )
    typer.echo(token)


@token_app.command("list")
def list_(
    all_: Annotated[bool, typer.Option("--all", help="Include revoked principals.")] = False,
    json_: Annotated[bool, typer.Option("--json", help="Print JSON, for scripts.")] = False,
    database_url: DatabaseUrl = None,
    data_dir: DataDir = None,
) -> None:
    """List principals (never their tokens or hashes)."""
    found = _run(database_url, data_dir, lambda repo: repo.all())
    shown = [p for p in found if all_ or p.revoked_at is None]
    if json_:
        typer.echo(json.dumps([_public(p) for p in shown], indent=2))
        return
    t = Table(title="principals", title_justify="left")
    for col in ("name", "role", "workspaces", "cert subject", "created", "revoked", "id"):
        t.add_column(col)
    for p in shown:
        d = _public(p)
        t.add_row(
            p.name,
            p.role.value,
            ", ".join(sorted(p.workspaces)) or "all",
            p.cert_subject or "",
            str(d["created_at"])[:19],
            str(d["revoked_at"] or "")[:19],
            p.id,
        )
    Console(highlight=False).print(t)


@token_app.command()
def revoke(
    name_or_id: Annotated[str, typer.Argument(help="The principal's name or id.")],
    database_url: DatabaseUrl = None,
    data_dir: DataDir = None,
) -> None:
    """Revoke a principal's token; every server refuses it within seconds."""
    done = _run(database_url, data_dir, lambda repo: repo.revoke(name_or_id))
    if not done:
        err.print(f"[red]refused:[/] no active principal named or with id {name_or_id!r}")
        raise typer.Exit(1)
    for p in done:
        err.print(f"revoked {p.name} ({p.role.value}, id {p.id})")


def _public(p: Principal) -> dict[str, object]:
    """What may be shown of a principal: everything but the token hash."""
    return {
        "id": p.id,
        "name": p.name,
        "role": p.role.value,
        "workspaces": sorted(p.workspaces),
        "cert_subject": p.cert_subject,
        "created_at": p.created_at.isoformat(),
        "revoked_at": p.revoked_at.isoformat() if p.revoked_at else None,
    }


def register(app: typer.Typer) -> None:
    app.add_typer(token_app, name="token")
