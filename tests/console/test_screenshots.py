"""Screenshots of the main pages, as docs/console.md shows them.

They are written to METER_CONSOLE_SCREENSHOTS (``METER_CONSOLE_SCREENSHOTS=docs/console
pytest tests/console/test_screenshots.py`` refreshes the docs' pictures) and otherwise to a
temporary directory, so that every run still renders each page in the browser.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import pytest
from playwright.async_api import expect

from meter.client import AsyncMeterClient
from tests.console.conftest import Running, SignIn
from tests.support import rid


@pytest.fixture
def out(tmp_path: Path) -> Path:
    where = Path(os.environ.get("METER_CONSOLE_SCREENSHOTS") or tmp_path)
    where.mkdir(parents=True, exist_ok=True)
    return where


def taken(where: Path) -> set[str]:
    return {p.stem for p in where.glob("*.png")}


async def test_the_main_pages_render_at_desktop_and_phone_sizes(
    page: Any,
    browser: Any,
    console: Running,
    admin: AsyncMeterClient,
    admin_token: str,
    sign_in: SignIn,
    out: Path,
) -> None:
    ws = "ws-acme-" + rid("shot")[-6:]
    await admin.grant(ws, rid("g"), package="Popular")
    await admin.grant(ws, rid("g"), amount=120, category="promotional")
    await admin.set_budget(ws, "apollo", key="project", value="apollo", period="month", limit=60)
    await admin.set_budget(ws, "per-team", key="team", period="week", limit=40, warn_at=[50, 90])
    await admin.set_member_limit(ws, "chloe", "day", 30)
    members = ("ana", "ben", "chloe")
    projects, teams = ("apollo", "zeus"), ("growth", "brand", "ops")
    for i in range(24):
        op = ("content.generate_post", "assistant.complex_analysis", "rss.process_item")[i % 3]
        labels = {"project": projects[i % 2], "team": teams[i % 3]}
        await admin.charge(
            ws, rid("job"), op, amount=1 + i % 3, actor=members[i % 3], labels=labels
        )
    await admin.reserve(ws, rid("job"), "content.generate_post", amount=3, actor="ana")

    await page.goto(console.url + "/signin")
    await page.screenshot(path=out / "signin.png")
    await sign_in(page, admin_token)
    shots = {
        "workspace": f"/w/{ws}",
        "history": f"/w/{ws}/history",
        "usage": f"/w/{ws}/usage?label=project",
        "holds": f"/w/{ws}/holds",
        "lots": f"/w/{ws}/lots",
        "catalog": "/catalog",
        "estimate": f"/estimate?platforms=2&days=14&workspace={ws}",
    }
    for name, path in shots.items():
        await page.goto(console.url + path)
        if name == "workspace":
            await expect(page.get_by_test_id("live-status")).to_contain_text("live")
        await page.screenshot(path=out / f"{name}.png", full_page=True)

    await page.goto(f"{console.url}/w/{ws}/grant")
    await page.select_option("#package", "Basic")
    await page.click("text=Review")
    await expect(page.get_by_test_id("confirm-text")).to_contain_text("Basic")
    await page.screenshot(path=out / "grant-confirm.png")

    phone = await browser.new_context(viewport={"width": 390, "height": 844})
    small = await phone.new_page()
    await sign_in(small, admin_token)
    await small.goto(f"{console.url}/w/{ws}")
    await expect(small.get_by_test_id("available")).to_be_visible()
    await small.screenshot(path=out / "phone.png", full_page=True)
    await phone.close()
    assert {*shots, "signin", "grant-confirm", "phone"} <= taken(out)
