"""Foreign gRPC clients (buf, grpcurl), installed once into ~/.cache/meter-test.

scripts/test-tools.sh installs them (.ci/run too, before `make test`). Where a tool cannot be
had, its tests skip saying what is missing; under CI (CI set) they fail instead, so CI never
skips them, unless the tool is not made for the machine at all.
"""

from __future__ import annotations

import asyncio
import os
import sys
from pathlib import Path

import pytest

TOOLS = Path(__file__).resolve().parents[2] / "scripts" / "test-tools.sh"


async def install(name: str) -> Path:
    proc = await asyncio.create_subprocess_exec(
        "bash",
        str(TOOLS),
        name,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
        env={**os.environ, "PYTHON": sys.executable},
    )
    out, err = await asyncio.wait_for(proc.communicate(), 300)
    if proc.returncode == 0:
        return Path(out.decode().strip())
    lines = err.decode(errors="replace").strip().splitlines()
    why = f"{name} is not available: {lines[-1] if lines else f'exit {proc.returncode}'}"
    if os.environ.get("CI") and proc.returncode != 4:  # 4: not made for this machine
        pytest.fail(f"{why} (CI must run these tests: .ci/run installs what they need)")
    pytest.skip(why)


@pytest.fixture(scope="session")
async def buf() -> Path:
    return await install("buf")


@pytest.fixture(scope="session")
async def grpcurl() -> Path:
    return await install("grpcurl")
