"""`meter console`: the web console, a client of a Meter server like the other commands."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from meter.cli.remote import DEFAULT_TARGET, Target, TlsCa, TlsCert, TlsKey, tls


def console(
    listen: Annotated[
        str,
        typer.Option(
            "--listen", envvar="METER_CONSOLE_LISTEN", help="HOST:PORT for the console's pages."
        ),
    ] = "127.0.0.1:8080",
    target: Target = DEFAULT_TARGET,
    tls_ca: TlsCa = None,
    tls_cert: TlsCert = None,
    tls_key: TlsKey = None,
    https_cert: Annotated[
        Path | None,
        typer.Option(
            "--https-cert",
            envvar="METER_CONSOLE_HTTPS_CERT",
            help="Serve the console over HTTPS: certificate (PEM).",
        ),
    ] = None,
    https_key: Annotated[
        Path | None,
        typer.Option(
            "--https-key",
            envvar="METER_CONSOLE_HTTPS_KEY",
            help="Serve the console over HTTPS: private key (PEM).",
        ),
    ] = None,
) -> None:
    """Serve the web console (example: meter console --listen 127.0.0.1:8080).

    Signing in takes a Meter token when the server requires one; --tls-* reach a server
    that speaks TLS, --https-* serve the console itself over HTTPS.
    """
    from meter.console.app import ConsoleSettings, run

    if bool(https_cert) != bool(https_key):
        typer.echo("meter console: give --https-cert and --https-key together", err=True)
        raise typer.Exit(2)
    host, _, port = listen.rpartition(":")
    if not port.isdigit():
        typer.echo(f"meter console: --listen {listen!r} is not HOST:PORT", err=True)
        raise typer.Exit(2)
    scheme = "https" if https_cert else "http"
    typer.echo(f"meter console: {scheme}://{listen}/ for the Meter server at {target}", err=True)
    if host not in ("127.0.0.1", "localhost", "::1", "[::1]") and not https_cert:
        typer.echo(
            "meter console: warning: serving beyond loopback without --https-cert; session "
            "cookies then travel in clear text",
            err=True,
        )
    run(
        ConsoleSettings(
            target=target,
            tls=tls(tls_ca, tls_cert, tls_key),
            listen=listen,
            https_cert=https_cert,
            https_key=https_key,
        )
    )


def register(app: typer.Typer) -> None:
    app.command("console")(console)
