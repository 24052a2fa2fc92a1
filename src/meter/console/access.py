"""What a token may do, learnt from the server itself: one harmless call per capability.

The console does not keep its own copy of the server's role table. At sign-in it makes, for
each thing a page can do, the cheapest call that the server authorises the same way, about a
workspace that does not exist (`PROBE`): the server checks role and scope before it looks at
the request, so a refusal for the role comes back as PERMISSION_DENIED/ROLE_NOT_ALLOWED and
anything else (NOT_FOUND, INVALID_ARGUMENT, an answer) means the role may. Writes are probed
with requests the server must reject as invalid (an amount of 0), so nothing is written.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

from meter.client import AsyncMeterClient, MeterError, PermissionDenied, Unauthenticated

# A workspace id no one uses (ids may not start with a dot in practice; any unknown id works).
PROBE = "console.probe.0"
PROBE_REQUEST = "console:probe"

# The capabilities a page asks about, and the RPC each one stands for.
CAPABILITIES = {
    "balance": "GetBalance",
    "watch": "WatchBalance",
    "history": "ListTransactions",
    "usage": "GetUsage",
    "holds": "ListHolds",
    "audit": "Audit",
    "grant": "GrantCredits",
    "adjust": "AdjustCredits",
    "limits": "ListMemberLimits",
    "budgets": "ListBudgets",
    "topup": "GetAutoTopUp",
    "catalog": "ListOperations",
    "packages": "ListPackages",
    "estimate": "EstimateCampaign",
    "webhooks": "ListWebhookEndpoints",
}
# What a role refused a capability may not do, in the not-allowed page's words (pages gated
# by a capability, web.gated): "Your token's role (...) may not <this>."
MAY_NOT = {
    "balance": "read this workspace's balance",
    "history": "read the history",
    "usage": "read usage",
    "holds": "list holds",
    "audit": "audit workspaces",
    "grant": "grant credits",
    "adjust": "adjust balances",
    "catalog": "read the catalog",
    "packages": "list packages",
    "estimate": "estimate campaigns",
    "webhooks": "manage webhook endpoints",
}
# Calls about no workspace, or about all of them: a token limited to some workspaces is
# refused these whatever its role.
_GLOBAL = {"webhooks"}


@dataclass(frozen=True, slots=True)
class Access:
    """What the signed-in token may do.

    Attributes:
        allowed: the capabilities (keys of CAPABILITIES) the server allows.
        scoped: the token is limited to some workspaces.
        open_server: the server asks for no credentials at all (zero-config loopback).
    """

    allowed: frozenset[str]
    scoped: bool = False
    open_server: bool = False

    def may(self, capability: str) -> bool:
        return capability in self.allowed

    @property
    def role(self) -> str:
        """The role that best explains `allowed` (the server does not name it)."""
        if self.open_server:
            return "no authentication"
        for role, marker in (
            ("admin", "holds"),
            ("app", "history"),
            ("billing", "grant"),
            ("planner", "catalog"),
            ("worker", "balance"),
        ):
            if marker in self.allowed:
                return role
        return "none"


OPEN = Access(frozenset(CAPABILITIES), open_server=True)


async def _watch_first(client: AsyncMeterClient) -> None:
    async for _ in client.watch_balance(PROBE):
        return


def _probes(client: AsyncMeterClient) -> dict[str, Callable[[], Awaitable[Any]]]:
    return {
        "balance": lambda: client.balance(PROBE),
        "watch": lambda: asyncio.wait_for(_watch_first(client), 5),
        "history": lambda: client.list_transactions(PROBE, page_size=1),
        "usage": lambda: client.usage(PROBE, "operation"),
        "holds": lambda: client.list_holds(PROBE, page_size=1),
        "audit": lambda: client.audit(PROBE),
        "grant": lambda: client.grant(PROBE, PROBE_REQUEST, amount=0),
        "adjust": lambda: client.adjust(PROBE, PROBE_REQUEST, 0, ""),
        "limits": lambda: client.member_limits(PROBE),
        "budgets": lambda: client.budgets(PROBE),
        "topup": lambda: client.auto_topup(PROBE),
        "catalog": lambda: client.list_operations(),
        "packages": lambda: client.list_packages(),
        "estimate": lambda: client.estimate_campaign(platforms=1, days=7),
        "webhooks": lambda: client.list_webhook_endpoints(),
    }


async def probe(client: AsyncMeterClient) -> Access:
    """What the client's token may do.

    Raises:
        Unauthenticated: the server does not accept the token.
        MeterError: the server could not be reached (Unavailable, DeadlineExceeded).
    """
    # Authenticate once first: a bad token or an unreachable server says so at once.
    try:
        await client.balance(PROBE)
    except Unauthenticated:
        raise
    except MeterError as e:
        if e.retryable:
            raise
    names = list(CAPABILITIES)
    results = await asyncio.gather(
        *(_one(name, call) for name, call in _probes(client).items()), return_exceptions=False
    )
    allowed = {n for n, (ok, _) in zip(names, results, strict=True) if ok}
    scoped = any(limited for _, limited in results)
    return Access(frozenset(allowed), scoped=scoped)


async def _one(name: str, call: Callable[[], Awaitable[Any]]) -> tuple[bool, bool]:
    """(allowed, refused for the workspace scope)."""
    try:
        await call()
    except PermissionDenied as e:
        if e.reason == "WORKSPACE_NOT_ALLOWED":
            return name not in _GLOBAL, True
        return False, False
    except (MeterError, TimeoutError):
        return True, False
    return True, False
