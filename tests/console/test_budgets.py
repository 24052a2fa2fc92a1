"""The console's budgets, usage by label and runway (DESIGN.md §13) in a real headless Chromium,
against a real `meter console` and Meter server."""

from __future__ import annotations

from datetime import UTC, timedelta
from typing import Any

from playwright.async_api import expect

from meter.client import AsyncMeterClient
from meter.console.format import when
from tests.console.conftest import Running, SignIn
from tests.security.conftest import Mint
from tests.support import rid


async def cells(rows: Any) -> list[list[str]]:
    """The text of each cell of each row a locator finds."""
    return [
        [c.strip() for c in await row.locator("th, td").all_inner_texts()]
        for row in await rows.all()
    ]


async def test_the_balance_card_shows_no_burn_yet_then_the_runway_live(
    page: Any, console: Running, admin: AsyncMeterClient, admin_token: str, sign_in: SignIn
) -> None:
    ws = f"ws-{rid('runway')}"
    await admin.grant(ws, rid("g"), amount=100)
    await admin.set_alert_thresholds(ws, low=10, critical=1, runway_days=60)
    await sign_in(page, admin_token)
    await page.goto(f"{console.url}/w/{ws}")
    await expect(page.get_by_test_id("days-left")).to_have_text("no burn yet")
    await expect(page.get_by_test_id("zero-at")).to_have_text("—")
    await expect(page.get_by_test_id("live-status")).to_contain_text("live")

    await admin.charge(ws, rid("c"), amount=14)  # 2 a day over 7 days: 86 last 43 days

    days = page.get_by_test_id("days-left")
    await expect(days).to_contain_text("43.0")
    await expect(days).to_contain_text("below the 60-day alert")
    await expect(page.get_by_test_id("burn-7d")).to_have_text("2.0")
    await expect(page.get_by_test_id("burn-30d")).to_have_text("0.5")
    zero = (await admin.balance(ws)).runway.zero_at.ToDatetime(tzinfo=UTC)
    # Read a moment after the page's: the same minute, or the one after it.
    shown = await page.get_by_test_id("zero-at").inner_text()
    assert shown in {when(zero), when(zero - timedelta(minutes=1))}


async def test_the_usage_page_lists_budgets_and_usage_by_a_label_with_their_standing(
    page: Any, console: Running, admin: AsyncMeterClient, admin_token: str, sign_in: SignIn
) -> None:
    ws = f"ws-{rid('budgets')}"
    await admin.grant(ws, rid("g"), amount=1000)
    await admin.set_budget(
        ws, "apollo", key="project", value="apollo", period="month", limit=100, warn_at=[50, 90]
    )
    await admin.set_budget(ws, "per-team", key="team", period="total", limit=40, enabled=False)
    await admin.set_member_limit(ws, "ana", "day", 30)
    await admin.charge(
        ws, rid("c"), amount=12, actor="ana", labels={"project": "apollo", "team": "ml"}
    )
    await admin.charge(ws, rid("c"), amount=5, actor="ben", labels={"team": "web"})
    await admin.reserve(ws, rid("h"), amount=7, actor="ben", labels={"project": "zeus"})
    listed = {b.budget_id: b for b in await admin.budgets(ws)}
    await sign_in(page, admin_token)

    await page.goto(f"{console.url}/w/{ws}/usage")

    budgets = page.get_by_test_id("budgets")
    resets = when(listed["apollo"].resets_at)
    assert [
        ["apollo", "project = apollo", "month", "100", "12", "88", resets, "50%, 90%", "on"],
        ["member:ana:day", "actor_id = ana", "day", "30", "12", "18",
         when(listed["member:ana:day"].resets_at), "—", "on"],
        ["per-team", "each team", "total", "40", "12 max", "28", "never", "80%", "off"],
        ["per-team,", "team = ml", "", "", "12", "28", "", "", ""],
        ["per-team,", "team = web", "", "", "5", "35", "", "", ""],
    ] == await cells(budgets.locator("tbody tr"))  # fmt: skip
    by_actor = await cells(page.get_by_test_id("by-actor").locator("tbody tr"))
    assert ["ana", "12", "1", "0", "member:ana:day: 12 of 30 a day, 18 left"] == by_actor[0]

    await page.fill("input[name=label]", "project")
    await page.click("form.filters button[type=submit]")
    await expect(page.get_by_role("heading", name="By project")).to_be_visible()
    assert [
        ["apollo", "12", "1", "0", "apollo: 12 of 100 a month, 88 left"],
        ["(no project)", "5", "1", "0", "—"],
        ["zeus", "0", "0", "7", "—"],
    ] == await cells(page.get_by_test_id("by-label").locator("tbody tr"))
    # The label keys the budgets name are offered in the field.
    assert ["project", "team"] == await page.locator("#label-keys option").evaluate_all(
        "options => options.map(o => o.value)"
    )

    answer = await page.goto(f"{console.url}/w/{ws}/usage?label=Not+a+key")
    assert 400 == answer.status
    await expect(page.get_by_role("alert")).to_contain_text("Label 'Not a key'")
    await expect(budgets).to_be_visible()


async def test_a_worker_sees_the_runway_and_an_app_token_the_budgets(
    page: Any, console: Running, admin: AsyncMeterClient, mint: Mint, sign_in: SignIn
) -> None:
    ws = f"ws-{rid('roles')}"
    await admin.grant(ws, rid("g"), amount=50)
    await sign_in(page, await mint("worker"))
    await page.goto(f"{console.url}/w/{ws}")
    await expect(page.get_by_test_id("days-left")).to_have_text("no burn yet")
    await page.goto(f"{console.url}/w/{ws}/usage")
    await expect(page.get_by_test_id("problem")).to_contain_text("Not allowed for your role")

    await page.context.clear_cookies()
    await sign_in(page, await mint("app"))
    await page.goto(f"{console.url}/w/{ws}/usage")
    await expect(page.get_by_test_id("no-budgets")).to_contain_text("No budgets")
