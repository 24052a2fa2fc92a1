"""`meter`: run the server, migrate, and administer Meter from a terminal."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Annotated

import typer

from meter import logs
from meter.cli import catalog, ledger
from meter.config import Settings

app = typer.Typer(
    help="Meter: credit metering for AI operations.\n\n"
    "Client commands reach a server with --target (METER_TARGET) and --token (METER_TOKEN).\n"
    "Exit codes: 0 done, 1 refused or failed (reason printed), 2 usage error, 3 unreachable.\n\n"
    "Example: meter balance ws-acme --target 127.0.0.1:50051",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
)

DatabaseUrl = Annotated[
    str | None,
    typer.Option(
        "--database-url",
        envvar="METER_DATABASE_URL",
        help="PostgreSQL URL; without it an embedded PostgreSQL runs in --data-dir.",
    ),
]
DataDir = Annotated[
    Path | None,
    typer.Option(
        "--data-dir", envvar="METER_DATA_DIR", help="Where the embedded PostgreSQL lives."
    ),
]


@app.command()
def serve(
    database_url: DatabaseUrl = None,
    data_dir: DataDir = None,
    listen: Annotated[
        str, typer.Option("--listen", envvar="METER_LISTEN", help="HOST:PORT to listen on.")
    ] = "127.0.0.1:50051",
    log_format: Annotated[str, typer.Option(envvar="METER_LOG_FORMAT")] = "json",
    log_level: Annotated[str, typer.Option(envvar="METER_LOG_LEVEL")] = "info",
) -> None:
    """Run the gRPC server (example: meter serve --listen 127.0.0.1:50051)."""
    logs.configure(log_level, log_format)
    base = Settings()
    settings = Settings(
        database_url=database_url or None,
        data_dir=data_dir or base.data_dir,
        listen=listen,
        require_auth=base.require_auth,
        log_level=log_level,
        log_format=log_format,
    )
    from meter.app import serve as run

    asyncio.run(run(settings))


@app.command()
def migrate(database_url: DatabaseUrl = None, data_dir: DataDir = None) -> None:
    """Bring the database schema up to date, and exit (example: meter migrate)."""
    logs.configure()
    from meter.app import database_url as resolve
    from meter.storage.db import migrate as run

    base = Settings()
    url = resolve(Settings(database_url=database_url or None, data_dir=data_dir or base.data_dir))
    run(url)
    typer.echo("migrated")


ledger.register(app)
catalog.register(app)

if __name__ == "__main__":
    app()
