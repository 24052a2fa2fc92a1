"""TLS and mutual TLS: handshakes with good and bad certificates, and subjects as principals."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import grpc
import pytest

from meter.app import App
from meter.client import AsyncMeterClient, Tls
from meter.storage.db import normalize_url
from meterpb.v1 import meter_pb2 as pb
from meterpb.v1 import meter_pb2_grpc
from tests.security.certs import CLIENT_SUBJECT, Certs, Pair
from tests.security.conftest import Mint, bearer, secure_settings
from tests.security.servers import meter
from tests.support import fails


def creds(ca: Path, client: Pair | None = None) -> grpc.ChannelCredentials:
    return grpc.ssl_channel_credentials(
        root_certificates=ca.read_bytes(),
        private_key=client.key.read_bytes() if client else None,
        certificate_chain=client.cert.read_bytes() if client else None,
    )


async def status(target: str, credentials: grpc.ChannelCredentials | None, md=None) -> str:
    """The status name of one GetBalance, "OK" included; handshake failures are UNAVAILABLE."""
    channel = (
        grpc.aio.secure_channel(target, credentials)
        if credentials
        else grpc.aio.insecure_channel(target)
    )
    async with channel:
        stub = meter_pb2_grpc.MeterStub(channel)
        try:
            await stub.GetBalance(
                pb.GetBalanceRequest(workspace_id="ws-tls"), metadata=md, timeout=5
            )
        except grpc.aio.AioRpcError as e:
            return e.code().name
    return "OK"


@pytest.fixture(scope="module")
async def tls_app(database_url: str, tls_files: Certs, admin_token: str) -> AsyncIterator[App]:
    s = secure_settings(database_url, tls_cert=tls_files.server.cert, tls_key=tls_files.server.key)
    a = App(s, normalize_url(database_url))
    await a.start()
    yield a
    await a.stop(grace=0.5)


@pytest.fixture(scope="module")
async def mtls_app(database_url: str, tls_files: Certs, mint: Mint) -> AsyncIterator[App]:
    await mint("app", subject=CLIENT_SUBJECT, name="cert-app")
    s = secure_settings(
        database_url,
        tls_cert=tls_files.server.cert,
        tls_key=tls_files.server.key,
        tls_client_ca=tls_files.ca,
    )
    a = App(s, normalize_url(database_url))
    await a.start()
    yield a
    await a.stop(grace=0.5)


async def test_tls_serves_clients_that_trust_its_ca_and_no_one_else(
    tls_app: App, tls_files: Certs, admin_token: str
):
    target = f"127.0.0.1:{tls_app.port}"
    md = bearer(admin_token)
    # NOT_FOUND: through the handshake and the guard, to a workspace that does not exist.
    assert "NOT_FOUND" == await status(target, creds(tls_files.ca), md)
    assert "UNAUTHENTICATED" == await status(target, creds(tls_files.ca))
    assert "UNAVAILABLE" == await status(target, creds(tls_files.stranger_ca), md)
    assert "UNAVAILABLE" == await status(target, None, md)


async def test_the_python_client_speaks_tls_with_a_token(
    tls_app: App, tls_files: Certs, admin_token: str
):
    client = AsyncMeterClient(
        f"localhost:{tls_app.port}", token=admin_token, tls=Tls(root_cert=tls_files.ca)
    )
    try:
        assert len(await client.list_packages()) > 0
    finally:
        await client.close()


async def test_mutual_tls_requires_a_client_certificate_from_its_ca(
    mtls_app: App, tls_files: Certs, admin_token: str
):
    target = f"127.0.0.1:{mtls_app.port}"
    md = bearer(admin_token)
    # A mapped certificate is a principal by itself; a token still takes precedence.
    assert "NOT_FOUND" == await status(target, creds(tls_files.ca, tls_files.client))
    assert "NOT_FOUND" == await status(target, creds(tls_files.ca, tls_files.unmapped), md)
    # A good certificate that maps to no principal, and no token.
    assert "UNAUTHENTICATED" == await status(target, creds(tls_files.ca, tls_files.unmapped))
    # No certificate, or one from another CA (with the same subject): no handshake.
    assert "UNAVAILABLE" == await status(target, creds(tls_files.ca), md)
    assert "UNAVAILABLE" == await status(target, creds(tls_files.ca, tls_files.stranger), md)
    assert "UNAVAILABLE" == await status(target, None, md)


async def test_a_certificate_principal_keeps_its_role(mtls_app: App, tls_files: Certs):
    async with grpc.aio.secure_channel(
        f"127.0.0.1:{mtls_app.port}", creds(tls_files.ca, tls_files.client)
    ) as ch:
        stub = meter_pb2_grpc.MeterStub(ch)
        f = await fails(
            stub.GrantCredits(
                pb.GrantCreditsRequest(workspace_id="ws-tls", request_id="r", amount=1)
            )
        )
        assert (grpc.StatusCode.PERMISSION_DENIED, "ROLE_NOT_ALLOWED") == (f.code, f.reason)


async def test_the_cli_reaches_a_mutual_tls_server_with_its_tls_environment(
    mtls_app: App, tls_files: Certs
):
    """The client certificate's principal (role app) may read balances: the refusal is the
    ledger's own WORKSPACE_NOT_FOUND, so the handshake and the guard were passed."""
    target = ["--target", f"localhost:{mtls_app.port}", "--timeout", "3"]
    env = {
        "METER_TLS_CA": str(tls_files.ca),
        "METER_TLS_CERT": str(tls_files.client.cert),
        "METER_TLS_KEY": str(tls_files.client.key),
    }
    code, _, err = await meter("balance", "ws-tls-cli", *target, env=env)
    assert (1, True) == (code, "WORKSPACE_NOT_FOUND" in err)
    code, _, err = await meter(
        "balance", "ws-tls-cli", *target, env={"METER_TLS_CA": env["METER_TLS_CA"]}
    )
    assert 3 == code


async def test_the_cli_takes_the_same_tls_files_as_flags(mtls_app: App, tls_files: Certs):
    """--tls-ca/--tls-cert/--tls-key do what METER_TLS_* do; without the client pair the
    mutual-TLS handshake fails and the server counts as unreachable (exit 3)."""
    target = ["--target", f"localhost:{mtls_app.port}", "--timeout", "3"]
    ca = ["--tls-ca", str(tls_files.ca)]
    pair = ["--tls-cert", str(tls_files.client.cert), "--tls-key", str(tls_files.client.key)]
    code, _, err = await meter("balance", "ws-tls-cli", *target, *ca, *pair)
    assert (1, True) == (code, "WORKSPACE_NOT_FOUND" in err)
    code, _, _ = await meter("balance", "ws-tls-cli", *target, *ca)
    assert 3 == code
