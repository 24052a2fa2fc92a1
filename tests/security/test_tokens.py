"""Tokens: who gets in, who does not, and how fast a revocation reaches every replica."""

from __future__ import annotations

import asyncio

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc

from meter.app import App
from meter.auth.model import new_token
from meter.storage.db import normalize_url
from meter.storage.principals_repo import PrincipalRepo
from meterpb.v1 import meter_pb2 as pb
from meterpb.v1 import meter_pb2_grpc
from tests.security.conftest import Mint, bearer, secure_settings
from tests.support import eventually, fails


def get_balance(channel: grpc.aio.Channel, ws: str, metadata: object = None) -> object:
    stub = meter_pb2_grpc.MeterStub(channel)
    return stub.GetBalance(pb.GetBalanceRequest(workspace_id=ws), metadata=metadata, timeout=5)


@pytest.mark.parametrize(
    "metadata",
    [
        None,
        (("authorization", ""),),
        (("authorization", "Bearer"),),
        (("authorization", "Basic dXNlcjpwYXNz"),),
        (("authorization", "Bearer not-a-meter-token"),),
        (("authorization", "Bearer " + new_token() + "x"),),
        # Under gRPC's own 8 KiB metadata limit, which answers RESOURCE_EXHAUSTED above it.
        (("authorization", "Bearer " + "mtr_" + "A" * 4_000),),
        (("authorization", new_token()),),
        (("authorization", "Bearer " + new_token()), ("authorization", "Bearer " + new_token())),
        (("x-api-key", new_token()),),
    ],
    ids=[
        "none",
        "empty",
        "scheme-only",
        "basic",
        "not-ours",
        "too-long",
        "huge",
        "no-scheme",
        "two-headers",
        "other-header",
    ],
)
async def test_missing_and_malformed_credentials_are_unauthenticated(metadata, secure_channel, ws):
    f = await fails(get_balance(secure_channel, ws, metadata))
    assert grpc.StatusCode.UNAUTHENTICATED == f.code
    assert "UNAUTHENTICATED" == f.reason


async def test_an_unknown_well_formed_token_is_unauthenticated_and_never_echoed(secure_channel, ws):
    token = new_token()
    f = await fails(get_balance(secure_channel, ws, bearer(token)))
    assert grpc.StatusCode.UNAUTHENTICATED == f.code
    assert token not in f.message
    assert token[4:20] not in f.message


async def test_a_token_made_a_moment_ago_works_at_once(mint: Mint, secure_channel, ws):
    token = await mint("app")
    # Past the guard: the ledger answers that the workspace does not exist yet.
    f = await fails(get_balance(secure_channel, ws, bearer(token)))
    assert grpc.StatusCode.NOT_FOUND == f.code


async def test_health_and_reflection_are_open_without_a_token(secure_channel):
    health = health_pb2_grpc.HealthStub(secure_channel)
    answer = await health.Check(health_pb2.HealthCheckRequest(service="meter.v1.Meter"))
    assert health_pb2.HealthCheckResponse.SERVING == answer.status

    async def ask():
        yield reflection_pb2.ServerReflectionRequest(list_services="")

    names = set()
    async for r in reflection_pb2_grpc.ServerReflectionStub(secure_channel).ServerReflectionInfo(
        ask()
    ):
        names |= {s.name for s in r.list_services_response.service}
    assert "meter.v1.Meter" in names


async def test_a_revoked_token_is_refused_within_seconds_by_every_replica(
    mint: Mint, principals: PrincipalRepo, secure_app: App, database_url: str, ws: str
):
    """Two servers on one database; the token is revoked in the database, as `meter token
    revoke` does, and both stop accepting it within the cache's 2 s."""
    name = f"revoke-me-{ws}"
    token = await mint("app", name=name)
    second = App(secure_settings(database_url), normalize_url(database_url))
    await second.start()
    try:
        async with (
            grpc.aio.insecure_channel(f"127.0.0.1:{secure_app.port}") as a,
            grpc.aio.insecure_channel(f"127.0.0.1:{second.port}") as b,
        ):

            async def refused(ch: grpc.aio.Channel) -> bool:
                # NOT_FOUND (no such workspace yet) means the token got past the guard.
                f = await fails(get_balance(ch, ws, bearer(token)))
                return f.code is grpc.StatusCode.UNAUTHENTICATED

            for ch in (a, b):
                assert False is await refused(ch)
            loop = asyncio.get_running_loop()
            revoked_at = loop.time()
            assert [name] == [p.name for p in await principals.revoke(name)]

            for ch in (a, b):
                await eventually(lambda ch=ch: refused(ch), within=5, interval=0.05)
            assert loop.time() - revoked_at < 3.0
    finally:
        await second.stop(grace=0.5)
