"""The console in a real headless Chromium, against a real `meter console` and Meter server."""

from __future__ import annotations

import time
from typing import Any

from playwright.async_api import expect

from meter.client import AsyncMeterClient
from tests.console.conftest import Running, SignIn
from tests.security.conftest import Mint
from tests.support import rid


async def test_sign_in_shows_the_role_and_sign_out_forgets_the_session(
    page: Any, console: Running, admin_token: str
) -> None:
    """A page asks for a token first; the session cookie is HttpOnly and SameSite=Strict."""
    await page.goto(console.url + "/w/ws-anything")
    await expect(page).to_have_url(f"{console.url}/signin?next=/w/ws-anything")
    await page.fill("#token", "mtr_" + "x" * 43)
    await page.click("button[type=submit]")
    await expect(page.get_by_test_id("signin-error")).to_contain_text("did not accept")

    await page.fill("#token", admin_token)
    await page.click("button[type=submit]")
    await expect(page.get_by_test_id("role")).to_contain_text("admin")
    await expect(page.get_by_test_id("problem")).to_contain_text("Unknown workspace")
    cookies = {c["name"]: c for c in await page.context.cookies()}
    session = cookies["meter_console"]
    assert session["httpOnly"] is True
    assert "Strict" == session["sameSite"]
    assert admin_token not in await page.content()

    await page.click("text=Sign out")
    await expect(page.locator("main")).to_contain_text("You are signed out")
    await page.goto(console.url + "/")
    await expect(page).to_have_url(f"{console.url}/signin?next=/")


async def test_a_grant_made_by_another_client_appears_within_a_second(
    page: Any, console: Running, admin: AsyncMeterClient, admin_token: str, sign_in: SignIn
) -> None:
    ws = f"ws-{rid('live')}"
    await admin.grant(ws, rid("g"), amount=1200)
    await sign_in(page, admin_token)
    await page.goto(f"{console.url}/w/{ws}")
    available = page.get_by_test_id("available")
    await expect(available).to_have_text("1,200")
    await expect(page.get_by_test_id("live-status")).to_contain_text("live")

    await admin.grant(ws, rid("g"), amount=34_000)
    started = time.monotonic()
    await expect(available).to_have_text("35,200", timeout=1000)
    assert time.monotonic() - started < 1.0
    await expect(page.get_by_test_id("last-transaction")).to_contain_text("+34,000")


async def test_history_filters_and_pages_return_what_list_transactions_returns(
    page: Any, console: Running, admin: AsyncMeterClient, admin_token: str, sign_in: SignIn
) -> None:
    ws = f"ws-{rid('hist')}"
    await admin.grant(ws, rid("g"), amount=10_000)
    for i in range(62):
        op = "content.generate_post" if i % 3 else "assistant.simple_question"
        await admin.charge(ws, rid("c"), op, amount=1 + i % 4, actor=f"member-{i % 2}")
    await admin.adjust(ws, rid("a"), -5, "correction")
    await sign_in(page, admin_token)

    async def shown() -> list[str]:
        rows = page.locator("[data-testid=entries] tbody tr td.rid")
        return [t.strip() for t in await rows.all_inner_texts()]

    await page.goto(f"{console.url}/w/{ws}/history")
    await page.select_option("select[name=kind]", "charge")
    await page.fill("input[name=operation]", "content.generate_post")
    await page.click("form.filters button[type=submit]")
    first = await admin.list_transactions(
        ws, kinds=["charge"], operations=["content.generate_post"], page_size=50
    )
    assert [e.request_id for e in first.entries] == await shown()
    assert 41 == len(first.entries)
    assert not first.next_page_token

    await page.goto(f"{console.url}/w/{ws}/history")
    expected = await admin.list_transactions(ws, page_size=50)
    assert [e.request_id for e in expected.entries] == await shown()
    await page.get_by_test_id("next-page").click()
    await expect(page.locator("text=« First page")).to_be_visible()
    second = await admin.list_transactions(ws, page_size=50, page_token=expected.next_page_token)
    assert [e.request_id for e in second.entries] == await shown()
    assert 14 == len(second.entries)

    await page.goto(f"{console.url}/w/{ws}/history?actor=member-1&kind=charge")
    by_actor = await admin.list_transactions(ws, actor="member-1", kinds=["charge"])
    assert [e.request_id for e in by_actor.entries] == await shown()

    csv = await page.request.get(f"{console.url}/w/{ws}/history.csv?kind=charge")
    lines = (await csv.text()).strip().splitlines()
    assert lines[0].startswith("time,kind,amount,balance_after")
    assert 62 == len(lines) - 1


async def test_a_grant_submitted_twice_through_the_form_is_applied_once(
    page: Any, console: Running, admin: AsyncMeterClient, admin_token: str, sign_in: SignIn
) -> None:
    ws = f"ws-{rid('twice')}"
    await admin.grant(ws, rid("g"), amount=10)
    await sign_in(page, admin_token)
    await page.goto(f"{console.url}/w/{ws}/grant")
    await page.fill("#amount", "777")
    await page.click("text=Review")
    await expect(page.get_by_test_id("confirm-text")).to_contain_text("777 credits")
    # The browser sends the confirmation form twice (as a double click or a resubmit does),
    # then once more by the button.
    statuses = await page.evaluate(
        """async () => {
            const form = document.querySelector("form[data-once]");
            const send = () => fetch(form.action, {method: "POST", body: new FormData(form)});
            const answers = await Promise.all([send(), send()]);
            return answers.map(a => a.status);
        }"""
    )
    assert [200, 200] == statuses
    await page.click("text=Confirm grant")
    await expect(page.get_by_test_id("done")).to_have_text("Credits granted")
    await expect(page.get_by_test_id("done-available")).to_have_text("787")

    grants = await admin.list_transactions(ws, kinds=["grant"])
    assert [10, 777] == sorted(e.amount for e in grants.entries)
    assert 787 == (await admin.balance(ws)).available


async def test_a_worker_token_sees_no_grant_form_and_a_post_without_csrf_is_refused(
    browser: Any,
    page: Any,
    console: Running,
    admin: AsyncMeterClient,
    admin_token: str,
    mint: Mint,
    sign_in: SignIn,
) -> None:
    ws = f"ws-{rid('roles')}"
    await admin.grant(ws, rid("g"), amount=500)
    await sign_in(page, await mint("worker"))
    await expect(page.get_by_test_id("role")).to_contain_text("worker")
    await page.goto(f"{console.url}/w/{ws}")
    await expect(page.get_by_test_id("available")).to_have_text("500")
    await expect(page.locator("nav.tabs")).not_to_contain_text("Grant")
    await page.goto(f"{console.url}/w/{ws}/grant")
    await expect(page.get_by_test_id("problem")).to_contain_text("Not allowed for your role")
    await expect(page.locator("#amount")).to_have_count(0)

    # An admin's session, and a POST that did not come from its form (no CSRF token).
    context = await browser.new_context()
    admin_page = await context.new_page()
    await sign_in(admin_page, admin_token)
    forged = await admin_page.request.post(
        f"{console.url}/w/{ws}/grant/confirm",
        form={"request_id": rid("forged"), "amount": "9999", "category": "manual"},
    )
    assert 403 == forged.status
    assert "Form refused" in await forged.text()
    await context.close()
    assert 500 == (await admin.balance(ws)).available


async def test_an_unknown_workspace_says_so(
    page: Any, console: Running, admin_token: str, sign_in: SignIn
) -> None:
    await sign_in(page, admin_token)
    answer = await page.goto(f"{console.url}/w/ws-{rid('nobody')}")
    assert 404 == answer.status
    problem = page.get_by_test_id("problem")
    await expect(problem).to_contain_text("Unknown workspace")
    await expect(problem).to_contain_text("a workspace exists from its first grant")
    assert "Traceback" not in await page.content()


async def test_a_server_without_authentication_needs_no_sign_in_and_says_so(
    page: Any, open_console: Running, stub: Any
) -> None:
    await page.goto(open_console.url + "/")
    await expect(page.get_by_test_id("open-server")).to_contain_text("requires no authentication")
    await expect(page.locator("#workspace")).to_be_visible()
