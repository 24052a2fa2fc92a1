"""Composition of the security settings: the guard on calls and the port's transport.

Kept out of app.py so the lifecycle there reads the same with or without authentication.
"""

from __future__ import annotations

import grpc
import structlog
from sqlalchemy.ext.asyncio import AsyncEngine

from meter.auth.directory import Directory
from meter.config import Settings, StartupError
from meter.rpc.auth import Guard
from meter.storage.principals_repo import PrincipalRepo

log = structlog.get_logger("meter")

NO_PRINCIPAL = (
    "authentication is on ({why}) but no principal exists, so nobody could call this server. "
    "Create one first, e.g.: meter token create --role admin --name ops "
    "--database-url <the same URL>; then give the token to callers as METER_TOKEN."
)


def announce_unauthenticated(settings: Settings) -> None:
    """The zero-config local mode's first words: nobody is asked who they are."""
    if not settings.auth_required:
        log.warning(
            "server.unauthenticated",
            message="authentication is off: loopback only, every caller is trusted; "
            "use --require-auth (METER_REQUIRE_AUTH=1) to turn it on",
            listen=settings.listen,
        )


async def guard(settings: Settings, engine: AsyncEngine) -> Guard | None:
    """The interceptor that authenticates and authorises calls, or None when auth is off.

    Raises:
        StartupError: authentication is on and no active principal exists.
    """
    if not settings.auth_required:
        return None
    directory = Directory(PrincipalRepo(engine).active)
    if not await directory.principals():
        why = "--require-auth" if settings.require_auth else f"listening on {settings.listen}"
        raise StartupError(NO_PRINCIPAL.format(why=why))
    return Guard(directory)


def credentials(settings: Settings) -> grpc.ServerCredentials | None:
    """TLS for the listening port, or None for plaintext.

    Raises:
        StartupError: half a TLS configuration, or files that cannot be read.
    """
    s = settings
    if not (s.tls_cert or s.tls_key or s.tls_client_ca):
        if not s.loopback_only:
            log.warning(
                "server.plaintext",
                message="listening beyond loopback without TLS: tokens cross the network in "
                "clear; use --tls-cert and --tls-key",
            )
        return None
    if not (s.tls_cert and s.tls_key):
        raise StartupError("TLS needs both --tls-cert and --tls-key")
    try:
        key, cert = s.tls_key.read_bytes(), s.tls_cert.read_bytes()
        ca = s.tls_client_ca.read_bytes() if s.tls_client_ca else None
    except OSError as e:
        # The path and the OS's reason only; never the file's content.
        raise StartupError(f"cannot read a TLS file: {e.filename}: {e.strerror}") from None
    return grpc.ssl_server_credentials(
        [(key, cert)], root_certificates=ca, require_client_auth=ca is not None
    )


def bind(server: grpc.aio.Server, settings: Settings) -> int:
    """Listen on settings.listen, with TLS when configured; returns the port."""
    creds = credentials(settings)
    if creds is None:
        return server.add_insecure_port(settings.listen)
    return server.add_secure_port(settings.listen, creds)
