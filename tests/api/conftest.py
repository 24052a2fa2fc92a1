"""Fixtures for API tests: the ledger reached through unary calls and through Stream."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import pytest

from tests.paths import StreamPath, UnaryPath


@pytest.fixture(params=["unary", "stream"])
async def path(request: pytest.FixtureRequest, stub: Any) -> AsyncIterator[Any]:
    p = UnaryPath(stub) if request.param == "unary" else StreamPath(stub)
    yield p
    await p.close()
