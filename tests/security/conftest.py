"""Fixtures for the security suite: principals in the test database and a server that
requires authentication, on the same database as the session's open server."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from pathlib import Path

import grpc
import pytest

from meter.app import App
from meter.auth.model import Role, new_token, token_hash
from meter.config import Settings
from meter.storage import db
from meter.storage.db import normalize_url
from meter.storage.principals_repo import PrincipalRepo
from tests.security import certs

Mint = Callable[..., Awaitable[str]]


def bearer(token: str) -> tuple[tuple[str, str]]:
    return (("authorization", f"Bearer {token}"),)


@pytest.fixture(scope="session")
async def principals(app: App, database_url: str) -> AsyncIterator[PrincipalRepo]:
    """`app` has migrated the database; this is how tests make and revoke principals."""
    engine = db.async_engine(database_url, pool_size=2)
    yield PrincipalRepo(engine)
    await engine.dispose()


@pytest.fixture(scope="session")
def mint(principals: PrincipalRepo) -> Mint:
    async def make(
        role: str, workspaces: Sequence[str] = (), subject: str | None = None, name: str = ""
    ) -> str:
        token = new_token()
        await principals.create(
            name or f"{role}-{uuid.uuid4().hex[:8]}",
            Role(role),
            workspaces,
            token_hash(token),
            subject,
        )
        return token

    return make


@pytest.fixture(scope="session")
async def admin_token(mint: Mint) -> str:
    return await mint("admin")


def secure_settings(database_url: str, **kw: object) -> Settings:
    return Settings(
        database_url=database_url,
        listen="127.0.0.1:0",
        require_auth=True,
        sweep_interval_s=0.5,
        catalog_refresh_s=0.5,
        grace_s=1.0,
        **kw,  # type: ignore[arg-type]
    )


@pytest.fixture(scope="session")
async def secure_app(database_url: str, admin_token: str) -> AsyncIterator[App]:
    a = App(secure_settings(database_url), normalize_url(database_url))
    await a.start()
    yield a
    await a.stop(grace=0.5)


@pytest.fixture(scope="session")
async def secure_channel(secure_app: App) -> AsyncIterator[grpc.aio.Channel]:
    async with grpc.aio.insecure_channel(f"127.0.0.1:{secure_app.port}") as ch:
        yield ch


@pytest.fixture(scope="session")
def tls_files(tmp_path_factory: pytest.TempPathFactory) -> certs.Certs:
    return certs.make(Path(tmp_path_factory.mktemp("certs")))
