"""Fixtures for the console: a real `meter console` process in front of a real Meter server,
and Debian's chromium driven by Playwright (its `executable_path`, no browser download).
Both last one test module, so that the suites after this one run without them.

Outside CI a machine without chromium or Playwright skips these tests and says which is
missing; under CI (CI=true) that is a failure, as .ci/run installs both.
"""

from __future__ import annotations

import asyncio
import os
import shutil
import sys
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any

import httpx
import pytest

from meter.app import App
from meter.client import AsyncMeterClient
from meter.config import Settings
from meter.storage.db import normalize_url
from tests.security.conftest import (  # noqa: F401 (fixtures, shared with the security suite)
    admin_token,
    mint,
    principals,
)
from tests.security.servers import free_port
from tests.support import eventually

CHROMIUM = os.environ.get("METER_CHROMIUM") or shutil.which("chromium") or "/usr/bin/chromium"


def _missing() -> str | None:
    try:
        import playwright.async_api  # noqa: F401
    except ImportError:
        return "Playwright for Python is not installed (pip install playwright)"
    if not os.path.exists(CHROMIUM):
        return f"chromium is not installed at {CHROMIUM} (apt-get install chromium)"
    return None


@pytest.fixture(scope="session")
def browser_available() -> None:
    missing = _missing()
    if missing:
        if os.environ.get("CI"):
            pytest.fail(f"console tests need a browser under CI: {missing}")
        pytest.skip(missing)


@dataclass
class Running:
    url: str
    target: str
    log: list[str]


@asynccontextmanager
async def console_process(target: str) -> AsyncIterator[Running]:
    """`meter console` as operators start it, until it answers; SIGTERM on the way out."""
    port = free_port()
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "meter.cli.main", "console",
        "--listen", f"127.0.0.1:{port}", "--target", target,
        stderr=asyncio.subprocess.PIPE,
    )  # fmt: skip
    running = Running(f"http://127.0.0.1:{port}", target, [])

    async def drain() -> None:
        assert proc.stderr is not None
        while line := await proc.stderr.readline():
            running.log.append(line.decode(errors="replace"))

    reader = asyncio.create_task(drain())
    try:
        async with httpx.AsyncClient() as http:

            async def up() -> bool:
                if proc.returncode is not None:
                    raise AssertionError(f"meter console exited: {''.join(running.log)}")
                try:
                    r = await http.get(running.url + "/static/console.css", timeout=1)
                except httpx.HTTPError:
                    return False
                return r.status_code == 200

            await eventually(up, within=30, interval=0.1)
        yield running
    finally:
        if proc.returncode is None:
            proc.terminate()
        try:
            await asyncio.wait_for(proc.wait(), 10)
        except TimeoutError:
            proc.kill()
            await proc.wait()
        await reader


@pytest.fixture(scope="module")
async def secure_app(database_url: str, admin_token: str) -> AsyncIterator[App]:  # noqa: F811
    """A server that requires a token, for one module: its pool is gone before the suites
    after this one (which start servers of their own) need connections."""
    settings = Settings(
        database_url=database_url, listen="127.0.0.1:0", require_auth=True, grace_s=1.0
    )
    a = App(settings, normalize_url(database_url))
    await a.start()
    yield a
    await a.stop(grace=0.5)


@pytest.fixture(scope="module")
async def console(secure_app: App) -> AsyncIterator[Running]:
    """The console in front of a server that requires a token."""
    async with console_process(f"127.0.0.1:{secure_app.port}") as running:
        yield running


@pytest.fixture(scope="module")
async def open_console(app: App) -> AsyncIterator[Running]:
    """The console in front of the zero-config server (no authentication)."""
    async with console_process(f"127.0.0.1:{app.port}") as running:
        yield running


@pytest.fixture(scope="module")
async def admin(secure_app: App, admin_token: str) -> AsyncIterator[AsyncMeterClient]:  # noqa: F811
    """Another client of the same server: what the console must show, it did."""
    async with AsyncMeterClient(f"127.0.0.1:{secure_app.port}", token=admin_token) as c:
        yield c


@pytest.fixture(scope="module")
async def browser(browser_available: None) -> AsyncIterator[Any]:
    from playwright.async_api import async_playwright

    async with async_playwright() as p:
        b = await p.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox"])
        yield b
        await b.close()


@pytest.fixture
async def page(browser: Any) -> AsyncIterator[Any]:
    """A fresh browser context (no cookies) at 1280x800, and a page in it."""
    context = await browser.new_context(viewport={"width": 1280, "height": 800})
    context.set_default_timeout(10_000)
    p = await context.new_page()
    yield p
    await context.close()


SignIn = Callable[[Any, str], Awaitable[None]]


@pytest.fixture
def sign_in(console: Running) -> SignIn:
    async def go(page: Any, token: str) -> None:
        await page.goto(console.url + "/signin")
        await page.fill("#token", token)
        await page.click("button[type=submit]")
        await page.wait_for_selector("[data-testid=role]")

    return go
