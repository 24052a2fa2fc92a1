"""Who may call what: the one table of RPC → roles and workspace scope, and its interceptor.

Every Meter and Catalog method is in RULES; a method missing from it is refused to everyone.
Health checking and reflection are open (probes and grpcurl carry no token). The check runs
before the handler and reads nothing from the ledger, so a refusal for a workspace outside a
token's scope is the same whether or not that workspace exists.

Stream carries many workspaces' items: a scoped principal's stream is checked message by
message as it arrives. A message with any item outside the scope is not applied at all; the
results of earlier messages are still delivered, and then the stream ends with
PERMISSION_DENIED. Ending it (rather than refusing the one item) is deliberate: a worker that
sends another workspace's work is misconfigured or compromised, and should stop.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from enum import Enum
from typing import Any

import grpc
import structlog

from meter.auth.directory import Directory
from meter.auth.model import Principal, Role, bearer
from meter.errors import Kind, MeterError
from meter.rpc.errors import abort
from meter.rpc.interceptors import Wrapped

log = structlog.get_logger("meter.auth")

OPEN_SERVICES = frozenset(
    {
        "grpc.health.v1.Health",
        "grpc.reflection.v1alpha.ServerReflection",
        "grpc.reflection.v1.ServerReflection",
    }
)


class Scope(Enum):
    """How a method's request names the workspaces it touches."""

    WORKSPACE = "workspace"  # workspace_id, required: must be in the principal's scope
    OPTIONAL = "optional"  # workspace_id, optional: checked when set
    ALL_IF_EMPTY = "all_if_empty"  # empty workspace_id means every one: unscoped only
    ITEMS = "items"  # Stream: each item's workspace_id, checked as items arrive
    NONE = "none"  # about no workspace (catalog reads)
    GLOBAL = "global"  # changes what every workspace sees: unscoped only


@dataclass(frozen=True, slots=True)
class Rule:
    roles: frozenset[Role]
    scope: Scope


def _rule(scope: Scope, *roles: Role) -> Rule:
    # Admins may do everything (DESIGN.md §6).
    return Rule(frozenset({*roles, Role.ADMIN}), scope)


W, P, A, B = Role.WORKER, Role.PLANNER, Role.APP, Role.BILLING
M, C, E = "/meter.v1.Meter/", "/meter.v1.Catalog/", "/meter.v1.Events/"

RULES: dict[str, Rule] = {
    # Workers run jobs.
    M + "Reserve": _rule(Scope.WORKSPACE, W),
    M + "Commit": _rule(Scope.WORKSPACE, W),
    M + "Release": _rule(Scope.WORKSPACE, W),
    M + "Extend": _rule(Scope.WORKSPACE, W),
    M + "Charge": _rule(Scope.WORKSPACE, W),
    M + "Stream": _rule(Scope.ITEMS, W),
    # Everyone who spends, plans or shows credits reads the balance.
    M + "GetBalance": _rule(Scope.WORKSPACE, W, P, A),
    # The web app: the live badge, the billing page's history, usage and alerts.
    M + "WatchBalance": _rule(Scope.WORKSPACE, A),
    M + "ListTransactions": _rule(Scope.WORKSPACE, A),
    M + "GetUsage": _rule(Scope.WORKSPACE, A),
    M + "ListAlerts": _rule(Scope.WORKSPACE, A),
    # The payment handler: purchases, their confirmation or failure, and auto top-up.
    M + "GrantCredits": _rule(Scope.WORKSPACE, B),
    M + "ConfirmGrant": _rule(Scope.WORKSPACE, B),
    M + "VoidGrant": _rule(Scope.WORKSPACE, B),
    M + "SetAutoTopUp": _rule(Scope.WORKSPACE, B),
    M + "ReportTopUpFailed": _rule(Scope.WORKSPACE, B),
    M + "GetAutoTopUp": _rule(Scope.WORKSPACE, B, A),
    # Admins control members' spend; the web app shows it.
    M + "SetMemberLimit": _rule(Scope.WORKSPACE),
    M + "ListMemberLimits": _rule(Scope.WORKSPACE, A),
    M + "SetBudget": _rule(Scope.WORKSPACE),
    M + "DeleteBudget": _rule(Scope.WORKSPACE),
    M + "ListBudgets": _rule(Scope.WORKSPACE, A),
    # Corrections and investigations are for admins.
    M + "ListHolds": _rule(Scope.WORKSPACE),
    M + "Refund": _rule(Scope.WORKSPACE),
    M + "AdjustCredits": _rule(Scope.WORKSPACE),
    M + "SetAlertThresholds": _rule(Scope.WORKSPACE),
    M + "Audit": _rule(Scope.ALL_IF_EMPTY),
    # A warehouse export reads every workspace's journal, as the event feed (below) does.
    M + "ExportJournal": _rule(Scope.ALL_IF_EMPTY, A, B),
    # The planner prices work.
    C + "ListOperations": _rule(Scope.NONE, P),
    C + "GetOperation": _rule(Scope.NONE, P),
    C + "Quote": _rule(Scope.OPTIONAL, P),
    C + "EstimateCampaign": _rule(Scope.OPTIONAL, P),
    C + "ListPackages": _rule(Scope.NONE, P),
    C + "PublishCatalog": _rule(Scope.GLOBAL),
    # Downstream systems pull the event feed (DESIGN.md §9); admins manage webhooks.
    E + "ListEvents": _rule(Scope.ALL_IF_EMPTY, A, B),
    E + "CreateWebhookEndpoint": _rule(Scope.GLOBAL),
    E + "ListWebhookEndpoints": _rule(Scope.GLOBAL),
    E + "GetWebhookEndpoint": _rule(Scope.GLOBAL),
    E + "UpdateWebhookEndpoint": _rule(Scope.GLOBAL),
    E + "DeleteWebhookEndpoint": _rule(Scope.GLOBAL),
    E + "RotateWebhookSecret": _rule(Scope.GLOBAL),
    E + "ListDeliveries": _rule(Scope.GLOBAL),
    E + "ReplayEvents": _rule(Scope.GLOBAL),
    E + "SendTestEvent": _rule(Scope.GLOBAL),
}


def unauthenticated(message: str) -> MeterError:
    return MeterError(Kind.UNAUTHENTICATED, "UNAUTHENTICATED", message)


def role_refused(principal: Principal, method: str) -> MeterError:
    return MeterError(
        Kind.PERMISSION,
        "ROLE_NOT_ALLOWED",
        f"role {principal.role.value!r} may not call {method.rsplit('/', 1)[-1]}",
    )


def workspace_refused() -> MeterError:
    # The same words for a workspace that exists and one that does not.
    return MeterError(
        Kind.PERMISSION,
        "WORKSPACE_NOT_ALLOWED",
        "these credentials do not cover the workspace of this request",
    )


def authorize(principal: Principal, method: str, request: Any) -> None:
    """Refuse (MeterError PERMISSION) what the principal may not do; ITEMS are left to Stream.

    Raises:
        MeterError: PERMISSION_DENIED, reason ROLE_NOT_ALLOWED or WORKSPACE_NOT_ALLOWED.
    """
    rule = RULES.get(method)
    if rule is None or principal.role not in rule.roles:
        raise role_refused(principal, method)
    if not principal.scoped or rule.scope in (Scope.NONE, Scope.ITEMS):
        return
    workspace_id = getattr(request, "workspace_id", "")
    if rule.scope is Scope.GLOBAL or (rule.scope is Scope.ALL_IF_EMPTY and not workspace_id):
        raise workspace_refused()
    if rule.scope is Scope.OPTIONAL and not workspace_id:
        return
    if not principal.may_use(workspace_id):
        raise workspace_refused()


def _subject(context: Any) -> str:
    try:
        values = context.auth_context().get("x509_subject") or ()
    except Exception:
        return ""
    return values[0].decode(errors="replace") if values else ""


Continuation = Callable[[grpc.HandlerCallDetails], Awaitable[Any]]


class Guard(grpc.aio.ServerInterceptor):  # type: ignore[type-arg]
    """Authenticates every call (bearer token, else a mapped client certificate) and checks
    RULES before the handler runs."""

    def __init__(self, directory: Directory) -> None:
        self.directory = directory
        self._wrapped = Wrapped()

    async def authenticate(self, context: Any) -> Principal:
        """The calling principal.

        Raises:
            MeterError: UNAUTHENTICATED for missing, malformed, unknown or revoked credentials
                (the token is never echoed), UNAVAILABLE when principals cannot be read.
        """
        headers = [v for k, v in context.invocation_metadata() or () if k == "authorization"]
        if len(headers) > 1:
            raise unauthenticated("send one authorization header")
        if headers:
            token = bearer(headers[0]) if isinstance(headers[0], str) else None
            if token is None:
                raise unauthenticated("malformed authorization: expected 'Bearer mtr_...'")
            found = await self.directory.by_token(token)
            if found is None:
                raise unauthenticated("unknown or revoked token")
            return found
        subject = _subject(context)
        if subject:
            found = await self.directory.by_subject(subject)
            if found is None:
                raise unauthenticated("the client certificate is not mapped to a principal")
            return found
        raise unauthenticated("credentials required: send 'authorization: Bearer <token>'")

    async def check(self, context: Any, method: str, request: Any) -> Principal | None:
        """The principal, or None after aborting the call with the refusal."""
        principal = None
        try:
            principal = await self.authenticate(context)
            authorize(principal, method, request)
            return principal
        except MeterError as e:
            _log_refused(method, e, principal)
            await abort(context, e)
        return None  # pragma: no cover (abort raises)

    async def intercept_service(
        self, continuation: Continuation, details: grpc.HandlerCallDetails
    ) -> Any:
        handler = await continuation(details)
        if handler is None or details.method[1:].rsplit("/", 1)[0] in OPEN_SERVICES:
            return handler
        return self._wrapped.get(details.method, handler, self._wrap)

    def _wrap(self, method: str, handler: Any) -> Any:
        if handler.unary_unary is not None:
            inner = handler.unary_unary

            async def unary(request: Any, context: Any) -> Any:
                await self.check(context, method, request)
                return await inner(request, context)

            return grpc.unary_unary_rpc_method_handler(
                unary, handler.request_deserializer, handler.response_serializer
            )
        if handler.unary_stream is not None:
            inner_us = handler.unary_stream

            async def unary_stream(request: Any, context: Any) -> Any:
                await self.check(context, method, request)
                async for item in inner_us(request, context):  # type: ignore[attr-defined]
                    yield item

            return grpc.unary_stream_rpc_method_handler(
                unary_stream, handler.request_deserializer, handler.response_serializer
            )
        if handler.stream_stream is not None:
            inner_ss = handler.stream_stream

            async def stream_stream(requests: Any, context: Any) -> Any:
                principal = await self.check(context, method, None)
                assert principal is not None
                refused: list[MeterError] = []
                if principal.scoped:
                    requests = _in_scope(principal, requests, refused)
                async for item in inner_ss(requests, context):  # type: ignore[attr-defined]
                    yield item
                if refused:
                    _log_refused(method, refused[0], principal)
                    await abort(context, refused[0])

            return grpc.stream_stream_rpc_method_handler(
                stream_stream, handler.request_deserializer, handler.response_serializer
            )
        # Client streaming: no such method in the contract; nobody may call one.
        return None


def _log_refused(method: str, error: MeterError, principal: Principal | None) -> None:
    log.info(
        "auth.refused",
        method=method.rsplit("/", 1)[-1],
        reason=error.reason,
        principal=principal.name if principal else None,
    )


async def _in_scope(
    principal: Principal, requests: AsyncIterator[Any], refused: list[MeterError]
) -> AsyncIterator[Any]:
    """The stream's messages while every item is in scope; it ends at the first that is not."""
    async for message in requests:
        for item in message.items:
            kind = item.WhichOneof("item")
            if kind is not None and not principal.may_use(getattr(item, kind).workspace_id):
                refused.append(workspace_refused())
                return
        yield message
