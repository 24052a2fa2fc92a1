"""Grants and adjustments: a form, a confirmation step, then one call with the form's id.

The request id is made when the form is first shown and travels in a hidden field through
the confirmation, so submitting twice (a double click, a reload, a retry after a lost
answer) is a replay: the server answers with the first result and grants once.
"""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta

from starlette.responses import Response

from meter.console.web import Ctx, gated, request_id
from meterpb.v1 import catalog_pb2 as cpb

CATEGORIES = ("paid", "promotional", "manual")
ID_RE = re.compile(r"[A-Za-z0-9._:-]{1,128}")


async def _packages(ctx: Ctx) -> list[cpb.Package]:
    return await ctx.client.list_packages() if ctx.access.may("packages") else []


def _grant_values(ctx: Ctx) -> tuple[dict[str, str], list[str]]:
    """The grant form's fields, and what is wrong with them."""
    v = {k: ctx.field(k) for k in ("request_id", "package", "amount", "category", "expires",
                                   "source")}  # fmt: skip
    v["category"] = v["category"] if v["category"] in CATEGORIES else ""
    errors = []
    if not ID_RE.fullmatch(v["request_id"]):
        errors.append("The form lost its request id: open the grant form again.")
    if bool(v["package"]) == bool(v["amount"]):
        errors.append("Choose a package or type an amount (one of the two).")
    if v["amount"] and (not v["amount"].isdigit() or int(v["amount"]) <= 0):
        errors.append("The amount is a whole number of credits above 0.")
    if v["expires"]:
        try:
            datetime.fromisoformat(v["expires"])
        except ValueError:
            errors.append("The expiry is a date such as 2026-12-31.")
    return v, errors


@gated("grant")
async def grant_form(ctx: Ctx) -> Response:
    """The grant form (admin or billing); a new request id each time it is opened."""
    values = {"request_id": request_id("grant"), "category": "manual"}
    return ctx.render("grant.html", tab="grant", step="form", v=values, errors=[],
                      packages=await _packages(ctx), categories=CATEGORIES)  # fmt: skip


@gated("grant")
async def grant_review(ctx: Ctx) -> Response:
    """Check the form and ask for confirmation; nothing is sent to Meter yet."""
    v, errors = _grant_values(ctx)
    step = "form" if errors else "confirm"
    return ctx.render("grant.html", 400 if errors else 200, tab="grant", step=step, v=v,
                      errors=errors, packages=await _packages(ctx),
                      categories=CATEGORIES)  # fmt: skip


@gated("grant")
async def grant_confirm(ctx: Ctx) -> Response:
    """GrantCredits with the form's request id: once, however often this is submitted."""
    v, errors = _grant_values(ctx)
    if errors:
        return ctx.render("grant.html", 400, tab="grant", step="form", v=v, errors=errors,
                          packages=await _packages(ctx), categories=CATEGORIES)  # fmt: skip
    expires = None
    if v["expires"]:
        expires = datetime.fromisoformat(v["expires"])
        expires = (expires if expires.tzinfo else expires.replace(tzinfo=UTC)) + timedelta(
            days=1 if len(v["expires"]) == 10 else 0
        )
    result = await ctx.client.grant(
        ctx.ws, v["request_id"],
        package=v["package"] or None, amount=int(v["amount"]) if v["amount"] else None,
        expires_at=expires, source=v["source"] or "console", actor="console",
        category=v["category"],
    )  # fmt: skip
    return ctx.render("done.html", tab="grant", what="Credits granted", result=result,
                      request_id=v["request_id"])  # fmt: skip


def _adjust_values(ctx: Ctx) -> tuple[dict[str, str], list[str]]:
    v = {k: ctx.field(k) for k in ("request_id", "amount", "reason")}
    errors = []
    if not ID_RE.fullmatch(v["request_id"]):
        errors.append("The form lost its request id: open the adjustment form again.")
    try:
        if int(v["amount"]) == 0:
            errors.append("An adjustment changes the balance: give an amount other than 0.")
    except ValueError:
        errors.append("The amount is a whole number of credits, negative to take credits away.")
    if not v["reason"]:
        errors.append("Say why: the reason is kept in the journal.")
    return v, errors


@gated("adjust")
async def adjust_form(ctx: Ctx) -> Response:
    """The adjustment form (admin)."""
    return ctx.render("adjust.html", tab="adjust", step="form", errors=[],
                      v={"request_id": request_id("adjust")})  # fmt: skip


@gated("adjust")
async def adjust_review(ctx: Ctx) -> Response:
    v, errors = _adjust_values(ctx)
    return ctx.render("adjust.html", 400 if errors else 200, tab="adjust",
                      step="form" if errors else "confirm", v=v, errors=errors)  # fmt: skip


@gated("adjust")
async def adjust_confirm(ctx: Ctx) -> Response:
    """AdjustCredits with the form's request id."""
    v, errors = _adjust_values(ctx)
    if errors:
        return ctx.render("adjust.html", 400, tab="adjust", step="form", v=v, errors=errors)
    result = await ctx.client.adjust(
        ctx.ws, v["request_id"], int(v["amount"]), v["reason"], actor="console"
    )
    return ctx.render("done.html", tab="adjust", what="Balance adjusted", result=result,
                      request_id=v["request_id"])  # fmt: skip
