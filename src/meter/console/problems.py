"""The server's refusals as sentences a person can act on, with the HTTP status to send."""

from __future__ import annotations

from dataclasses import dataclass, field

from meter.client import (
    DeadlineExceeded,
    InvalidArgument,
    MeterError,
    NotFound,
    PermissionDenied,
    Unauthenticated,
    Unavailable,
    Unimplemented,
    WorkspaceNotFound,
)


@dataclass(frozen=True, slots=True)
class Problem:
    """What went wrong, for a page: a title, a sentence, details, and the HTTP status."""

    title: str
    detail: str
    status: int
    reason: str = ""
    lines: tuple[str, ...] = field(default=())


def explain(error: MeterError, *, target: str, role: str, workspace: str = "") -> Problem:
    """The Problem a page shows for a failed call."""
    lines = tuple(f"{v.field}: {v.description}" for v in error.violations)
    if isinstance(error, Unavailable | DeadlineExceeded):
        return Problem(
            "Meter cannot be reached",
            f"The console could not reach the Meter server at {target}. It may be stopped or "
            "restarting; try again in a moment.",
            503,
            error.reason,
        )
    if isinstance(error, WorkspaceNotFound):
        return Problem(
            "Unknown workspace",
            f"There is no workspace {workspace!r}. Check the id; a workspace exists from its "
            "first grant.",
            404,
            error.reason,
        )
    if isinstance(error, PermissionDenied):
        if error.reason == "WORKSPACE_NOT_ALLOWED":
            detail = (
                f"The token you signed in with does not cover workspace {workspace!r}."
                if workspace
                else "The token you signed in with is limited to some workspaces, and this "
                "page is about all of them."
            )
            return Problem("Workspace not allowed", detail, 403, error.reason)
        return Problem(
            "Not allowed for your role",
            f"Your token's role ({role}) may not do this: {error.message}.",
            403,
            error.reason,
        )
    if isinstance(error, Unauthenticated):
        return Problem(
            "Signed out",
            "The server no longer accepts your token (revoked, or the server changed). "
            "Sign in again.",
            401,
            error.reason,
        )
    if isinstance(error, Unimplemented):
        return Problem(
            "Not served",
            "The server does not offer this call yet.",
            501,
            error.reason,
        )
    if isinstance(error, InvalidArgument):
        return Problem("Not accepted", error.message, 400, error.reason, lines)
    if isinstance(error, NotFound):
        return Problem("Not found", error.message, 404, error.reason)
    meta = tuple(f"{k}: {v}" for k, v in sorted(error.metadata.items()))
    return Problem("Refused", error.message, 409, error.reason, lines + meta)
