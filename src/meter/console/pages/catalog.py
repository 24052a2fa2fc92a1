"""Pages about no single workspace: the catalog and its versions, packages, the estimate
calculator, and webhook endpoints with their deliveries."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from starlette.responses import Response

from meter.client import NotFound
from meter.console.web import Ctx, gated
from meterpb.v1 import catalog_pb2 as cpb


def _int(text: str, default: int) -> int:
    try:
        return int(text)
    except ValueError:
        return default


@dataclass(frozen=True, slots=True)
class Change:
    """One operation's rule in two versions: added, removed or changed (fields listed)."""

    operation: str
    change: str
    before: cpb.Operation | None
    after: cpb.Operation | None
    fields: tuple[str, ...] = ()


_RULE_FIELDS = ("display_name", "min", "max", "unit", "free", "description")


def diff(old: list[cpb.Operation], new: list[cpb.Operation]) -> list[Change]:
    """What changed from one version's rules to another's, by operation key."""
    a = {o.operation: o for o in old}
    b = {o.operation: o for o in new}
    out = []
    for key in sorted(a.keys() | b.keys()):
        before, after = a.get(key), b.get(key)
        if before is None:
            out.append(Change(key, "added", None, after))
        elif after is None:
            out.append(Change(key, "removed", before, None))
        else:
            fields = tuple(f for f in _RULE_FIELDS if getattr(before, f) != getattr(after, f))
            if fields:
                out.append(Change(key, "changed", before, after, fields))
    return out


@gated("catalog")
async def catalog(ctx: Ctx) -> Response:
    """A catalog version's rules (the current one by default), and its diff with another."""
    current = (await ctx.client.list_operations()).catalog_version
    version = _int(ctx.field("version"), current) or current
    try:
        shown = await ctx.client.list_operations(version)
    except NotFound:
        shown, version = await ctx.client.list_operations(), current
    compare = _int(ctx.field("compare"), version - 1 if version > 1 else 0)
    changes: list[Change] | None = None
    if 0 < compare != version:
        try:
            other = await ctx.client.list_operations(compare)
            changes = diff(list(other.operations), list(shown.operations))
        except NotFound:
            changes = None
    return ctx.render(
        "catalog.html", current=current, version=version, compare=compare,
        operations=list(shown.operations), changes=changes,
        versions=list(range(current, 0, -1)),
    )  # fmt: skip


@gated("packages")
async def packages(ctx: Ctx) -> Response:
    return ctx.render("packages.html", packages=await ctx.client.list_packages())


@gated("estimate")
async def estimate(ctx: Ctx) -> Response:
    """The planner's calculator: EstimateCampaign for the form's campaign (a GET, no write)."""
    q = ctx.request.query_params
    v: dict[str, Any] = {
        "platforms": max(_int(q.get("platforms", "1"), 1), 1),
        "days": max(_int(q.get("days", "7"), 7), 1),
        "posts_per_week": max(_int(q.get("posts_per_week", "0"), 0), 0),
        "complexity": q.get("complexity", "") if q.get("complexity") in
        ("simple", "standard", "complex") else "",
        "rss_items": max(_int(q.get("rss_items", "0"), 0), 0),
        "strategy": q.get("strategy") == "on",
        "workspace": q.get("workspace", "").strip(),
    }  # fmt: skip
    result = None
    if "platforms" in q:
        result = await ctx.client.estimate_campaign(
            platforms=int(v["platforms"]), days=int(v["days"]),
            posts_per_week=int(v["posts_per_week"]), complexity=str(v["complexity"]),
            strategy_analysis=bool(v["strategy"]), rss_items=int(v["rss_items"]),
            workspace=str(v["workspace"]),
        )  # fmt: skip
    return ctx.render("estimate.html", v=v, result=result)


@gated("webhooks")
async def webhooks(ctx: Ctx) -> Response:
    return ctx.render("webhooks.html", endpoints=await ctx.client.list_webhook_endpoints())


@gated("webhooks")
async def deliveries(ctx: Ctx) -> Response:
    """One endpoint and its delivery attempts, newest first, a keyset page at a time."""
    endpoint_id = str(ctx.request.path_params["endpoint"])
    endpoint = await ctx.client.get_webhook_endpoint(endpoint_id)
    found = await ctx.client.list_deliveries(
        endpoint_id, page_size=50, page_token=ctx.field("page_token")
    )
    return ctx.render("deliveries.html", endpoint=endpoint, attempts=list(found.attempts),
                      next_token=found.next_page_token)  # fmt: skip
