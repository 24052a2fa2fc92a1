"""Principals, roles and bearer tokens: the vocabulary of DESIGN.md §6.

A token is shown once when it is made; only its SHA-256 is stored. The hash needs no salt or
stretching: the token is 32 random bytes, so there is nothing to guess from a leaked hash.
"""

from __future__ import annotations

import hashlib
import re
import secrets
from dataclasses import dataclass
from datetime import datetime
from enum import Enum

# A recognisable prefix lets secret scanners (and people) tell a Meter token when they see one.
TOKEN_PREFIX = "mtr_"
TOKEN_RE = re.compile(r"mtr_[A-Za-z0-9_-]{43}")
NAME_RE = re.compile(r"[A-Za-z0-9._:@-]{1,64}")
# A bearer header longer than this is refused before anything else looks at it.
MAX_HEADER = 256


class Role(Enum):
    """What a principal is for; rpc.auth maps each RPC to the roles that may call it."""

    WORKER = "worker"
    PLANNER = "planner"
    APP = "app"
    BILLING = "billing"
    ADMIN = "admin"


@dataclass(frozen=True, slots=True)
class Principal:
    """A calling service: a role, optionally limited to some workspaces.

    Attributes:
        workspaces: the workspaces it may use; empty means every workspace.
        token_hash: hex SHA-256 of its bearer token.
        cert_subject: a client certificate subject that stands for this principal (mTLS).
    """

    id: str
    name: str
    role: Role
    workspaces: frozenset[str]
    token_hash: str
    created_at: datetime
    revoked_at: datetime | None = None
    cert_subject: str | None = None

    @property
    def scoped(self) -> bool:
        return bool(self.workspaces)

    def may_use(self, workspace_id: str) -> bool:
        """Unscoped principals may use every workspace; scoped ones only theirs."""
        return not self.workspaces or workspace_id in self.workspaces


def new_token() -> str:
    """A fresh bearer token: the prefix and 32 random bytes, URL-safe base64."""
    return TOKEN_PREFIX + secrets.token_urlsafe(32)


def token_hash(token: str) -> str:
    """What is stored and compared instead of the token."""
    return hashlib.sha256(token.encode()).hexdigest()


def bearer(header: str) -> str | None:
    """The token of an `authorization: Bearer <token>` value, or None when malformed."""
    if len(header) > MAX_HEADER:
        return None
    scheme, _, token = header.strip().partition(" ")
    token = token.strip()
    if scheme.lower() != "bearer" or not TOKEN_RE.fullmatch(token):
        return None
    return token


def normalize_subject(subject: str) -> str:
    """A certificate subject as compared: as RFC 2253 writes it, without spaces around `,`
    and `=` (`openssl x509 -noout -subject -nameopt RFC2253` prints it this way)."""
    parts = [p.strip() for p in subject.split(",") if p.strip()]
    return ",".join(k.strip() + "=" + v.strip() for k, _, v in (p.partition("=") for p in parts))
