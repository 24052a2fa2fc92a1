"""`meter`: run the server, migrate, and administer Meter from a terminal."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Annotated, Any

import typer

from meter import logs
from meter.cli import (
    budgets,
    catalog,
    console,
    database,
    events,
    export,
    ledger,
    policies,
    tokens,
    webhooks,
)
from meter.cli.database import DataDir
from meter.config import Settings, StartupError, duration, durations

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
TlsCert = Annotated[
    Path | None,
    typer.Option("--tls-cert", envvar="METER_TLS_CERT", help="Serve TLS: certificate (PEM)."),
]
TlsKey = Annotated[
    Path | None,
    typer.Option("--tls-key", envvar="METER_TLS_KEY", help="Serve TLS: private key (PEM)."),
]
TlsClientCa = Annotated[
    Path | None,
    typer.Option(
        "--tls-client-ca",
        envvar="METER_TLS_CLIENT_CA",
        help="Mutual TLS: require client certificates signed by this CA (PEM).",
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
    require_auth: Annotated[
        bool,
        typer.Option(
            "--require-auth",
            envvar="METER_REQUIRE_AUTH",
            help="Authenticate every call (always on when listening beyond loopback).",
        ),
    ] = False,
    require_sync_standby: Annotated[
        bool,
        typer.Option(
            "--require-sync-standby",
            envvar="METER_REQUIRE_SYNC_STANDBY",
            help="Commit credits only while a synchronous standby streams (HA clusters).",
        ),
    ] = False,
    tls_cert: TlsCert = None,
    tls_key: TlsKey = None,
    tls_client_ca: TlsClientCa = None,
    metrics_listen: Annotated[
        str,
        typer.Option(
            "--metrics-listen",
            envvar="METER_METRICS_LISTEN",
            help="HOST:PORT for Prometheus metrics at /metrics (off when empty).",
        ),
    ] = "",
    event_retention: Annotated[
        str | None,
        typer.Option(
            "--event-retention",
            envvar="METER_EVENT_RETENTION",
            help="How long events are kept (default 30d).",
        ),
    ] = None,
    webhook_retry_schedule: Annotated[
        str | None,
        typer.Option(
            "--webhook-retry-schedule",
            envvar="METER_WEBHOOK_RETRY_SCHEDULE",
            help="Delays between webhook attempts (default 5s,5m,30m,2h,5h,10h,10h).",
        ),
    ] = None,
    webhook_disable_after: Annotated[
        str | None,
        typer.Option(
            "--webhook-disable-after",
            envvar="METER_WEBHOOK_DISABLE_AFTER",
            help="Disable an endpoint that has failed for this long (default 5d).",
        ),
    ] = None,
    workers: Annotated[
        int | None,
        typer.Option(
            "--workers",
            envvar="METER_WORKERS",
            min=1,
            help="Server processes sharing the port (default: the cores this host gives it).",
        ),
    ] = None,
) -> None:
    """Run the gRPC server (example: meter serve --listen 127.0.0.1:50051)."""
    logs.configure(log_level, log_format)
    database.check_url("serve", database_url)
    overrides: dict[str, Any] = {}
    try:
        base = Settings()
        if event_retention:
            overrides["event_retention_s"] = duration(event_retention)
        if webhook_retry_schedule:
            overrides["webhook_retry_schedule_s"] = durations(webhook_retry_schedule)
        if webhook_disable_after:
            overrides["webhook_disable_after_s"] = duration(webhook_disable_after)
    except ValueError as e:
        typer.echo(f"meter serve: {e}", err=True)
        raise typer.Exit(2) from None
    settings = Settings(
        **overrides,
        database_url=database_url or None,
        data_dir=data_dir or base.data_dir,
        listen=listen,
        require_auth=require_auth,
        require_sync_standby=require_sync_standby,
        tls_cert=tls_cert,
        tls_key=tls_key,
        tls_client_ca=tls_client_ca,
        metrics_listen=metrics_listen,
        log_level=log_level,
        log_format=log_format,
    )
    from meter import workers as pool
    from meter.app import serve as run

    processes = workers or pool.default_workers()
    try:
        with database.reaching("serve"):
            if processes == 1:
                asyncio.run(run(settings))
            else:
                pool.serve(settings, processes)
    except StartupError as e:
        typer.echo(f"meter serve: refusing to start: {e}", err=True)
        raise typer.Exit(1) from None


@app.command()
def migrate(database_url: DatabaseUrl = None, data_dir: DataDir = None) -> None:
    """Bring the database schema up to date, and exit (example: meter migrate)."""
    logs.configure()
    from meter.storage.db import migrate as run

    url = database.resolve("migrate", database_url, data_dir)
    with database.reaching("migrate"):
        run(url)
    typer.echo("migrated")


ledger.register(app)
policies.register(app)
budgets.register(app)
tokens.register(app)
catalog.register(app)
events.register(app)
export.register(app)
webhooks.register(app)
console.register(app)

if __name__ == "__main__":
    app()
