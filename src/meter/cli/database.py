"""What the commands that reach the database directly (serve, migrate, token) share: one
line, never a traceback, for a URL nobody can read or a database nobody can reach."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Annotated

import typer

from meter.config import Settings

DataDir = Annotated[
    Path | None,
    typer.Option(
        "--data-dir", envvar="METER_DATA_DIR", help="Where the embedded PostgreSQL lives."
    ),
]


def check_url(command: str, database_url: str | None) -> None:
    """Exit 2 with one line when the URL is not one libpq or SQLAlchemy reads."""
    from meter.storage.dburl import DatabaseUrl, DatabaseUrlError

    if not database_url:
        return
    try:
        DatabaseUrl.parse(database_url)
    except DatabaseUrlError as e:
        typer.echo(f"meter {command}: --database-url / METER_DATABASE_URL: {e}", err=True)
        raise typer.Exit(2) from None


@contextmanager
def reaching(command: str) -> Iterator[None]:
    """Exit 3 with libpq's own reason (which names hosts and ports, never a password) when
    no host of the URL takes the connection."""
    import psycopg
    from sqlalchemy import exc as sa_exc

    try:
        yield
    except (sa_exc.OperationalError, psycopg.OperationalError) as e:
        lines = str(getattr(e, "orig", None) or e).splitlines()
        reason = "; ".join(line.strip() for line in lines if line.strip()) or type(e).__name__
        typer.echo(f"meter {command}: cannot reach the database: {reason}", err=True)
        raise typer.Exit(3) from None


def resolve(command: str, database_url: str | None, data_dir: Path | None) -> str:
    """The URL to use: the given one, checked, or the embedded PostgreSQL's."""
    from meter.app import database_url as resolve_url

    check_url(command, database_url)
    base = Settings()
    settings = Settings(database_url=database_url or None, data_dir=data_dir or base.data_dir)
    return resolve_url(settings)
