"""Signing in and out, finding a workspace, and the pages for a console that cannot work."""

from __future__ import annotations

import hmac
import secrets
from typing import TYPE_CHECKING

from starlette.requests import Request
from starlette.responses import HTMLResponse, RedirectResponse, Response

from meter.client import MeterError, Unauthenticated
from meter.console.access import probe
from meter.console.problems import Problem
from meter.console.sessions import COOKIE
from meter.console.web import Ctx, page, set_cookie

if TYPE_CHECKING:
    from meter.console.app import Console

# The sign-in form's CSRF token is a cookie and a field that must match (there is no
# session yet), so another site cannot sign a browser in with a token of its choosing.
SIGNIN_COOKIE = "meter_console_signin"


def _safe_next(target: str) -> str:
    return target if target.startswith("/") and not target.startswith("//") else "/"


def _signin_page(
    request: Request, console: Console, *, error: str = "", status: int = 200, after: str = ""
) -> HTMLResponse:
    nonce = secrets.token_urlsafe(24)
    notice = ""
    if request.query_params.get("expired"):
        notice = "Your session ended or the server stopped accepting your token. Sign in again."
    elif request.query_params.get("signed_out"):
        notice = "You are signed out."
    response = console.templates.TemplateResponse(
        request,
        "signin.html",
        {
            "ctx": None,
            "console": console,
            "nonce": nonce,
            "error": error,
            "notice": notice,
            "next": _safe_next(after or request.query_params.get("next", "/")),
        },
        status_code=status,
    )
    response.set_cookie(
        SIGNIN_COOKIE, nonce, httponly=True, samesite="strict",
        secure=request.url.scheme == "https", path="/signin", max_age=3600,
    )  # fmt: skip
    return response


async def signin(request: Request) -> Response:
    """The sign-in form, and signing in with a Meter token."""
    console: Console = request.app.state.console
    if await console.server_is_open():
        return RedirectResponse("/", status_code=303)
    if request.method == "GET":
        return _signin_page(request, console)
    form = await request.form()
    after = _safe_next(str(form.get("next", "/")))
    sent, cookie = form.get("nonce"), request.cookies.get(SIGNIN_COOKIE, "")
    if not (isinstance(sent, str) and cookie and hmac.compare_digest(sent, cookie)):
        return _signin_page(
            request, console, error="The form expired: sign in again.", status=403, after=after
        )
    token = str(form.get("token", "")).strip()
    if not token:
        return _signin_page(request, console, error="Paste a Meter token.", status=400, after=after)
    client = console.client(token)
    try:
        access = await probe(client)
    except Unauthenticated:
        await client.close()
        return _signin_page(
            request, console, status=401, after=after,
            error="Meter did not accept this token (unknown, revoked or mistyped).",
        )  # fmt: skip
    except MeterError as e:
        await client.close()
        return _signin_page(
            request, console, status=503, after=after,
            error=f"Meter at {console.settings.target} cannot be reached ({e.reason}).",
        )  # fmt: skip
    old = request.cookies.get(COOKIE)
    if old:
        await console.store.close(old)
    session = await console.store.open(client, access, signed_in=True, owns_client=True)
    response = RedirectResponse(after, status_code=303)
    set_cookie(request, response, session)
    response.delete_cookie(SIGNIN_COOKIE, path="/signin")
    return response


@page
async def signout(ctx: Ctx) -> Response:
    """Forget the session and its token."""
    await ctx.console.store.close(ctx.session.id)
    response = RedirectResponse("/signin?signed_out=1", status_code=303)
    response.delete_cookie(COOKIE, path="/")
    return response


@page
async def home(ctx: Ctx) -> Response:
    """Find a workspace; the pages that are about no single workspace."""
    ws = ctx.field("workspace")
    if ws:
        return RedirectResponse(f"/w/{ws}", status_code=303)
    return ctx.render("home.html")


def unreachable(request: Request, console: Console) -> HTMLResponse:
    problem = Problem(
        "Meter cannot be reached",
        f"The console could not reach the Meter server at {console.settings.target}. It may "
        "be stopped or restarting; reload this page in a moment.",
        503,
        "UNAVAILABLE",
    )
    return _problem_page(request, console, problem)


def crashed(request: Request, console: Console) -> HTMLResponse:
    problem = Problem(
        "Something went wrong in the console",
        "The console failed to show this page. The Meter server's data is untouched; try "
        "again, and report it if it keeps happening.",
        500,
        "INTERNAL",
    )
    return _problem_page(request, console, problem)


def _problem_page(request: Request, console: Console, problem: Problem) -> HTMLResponse:
    """The problem page outside any session (no Ctx: the page cannot be served normally)."""
    return console.templates.TemplateResponse(
        request, "problem.html", {"ctx": None, "console": console, "problem": problem},
        status_code=problem.status,
    )  # fmt: skip
