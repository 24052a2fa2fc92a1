"""Standard Webhooks signatures: how Meter signs its deliveries and how receivers check them.

A delivery is a POST whose body is `{"type", "timestamp", "data"}` with three headers:
`webhook-id` (the event id, the same on every retry: deduplicate by it), `webhook-timestamp`
(Unix seconds) and `webhook-signature`: `v1,` + base64 HMAC-SHA256 of
`{id}.{timestamp}.{body}` keyed with the secret's decoded bytes, several of them separated by
spaces while a rotated secret still signs (https://www.standardwebhooks.com).

A receiver verifies the raw body, before parsing it:

    from meter.webhooks import verify, WebhookVerificationError

    try:
        event = verify(request.body, request.headers, secret)
    except WebhookVerificationError:
        return 400
    handle(event.id, event.type, event.data)  # skip event.id if it was handled before

This module needs nothing beyond the standard library, so receivers can use it alone.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import secrets
import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any

__all__ = [
    "SECRET_PREFIX",
    "TOLERANCE_S",
    "WebhookEvent",
    "WebhookVerificationError",
    "new_secret",
    "sign",
    "verify",
]

SECRET_PREFIX = "whsec_"
# Deliveries older or newer than this are refused: a captured request cannot be replayed later.
TOLERANCE_S = 5 * 60


class WebhookVerificationError(Exception):
    """The delivery is not authentic (bad or missing signature) or not fresh."""


@dataclass(frozen=True, slots=True)
class WebhookEvent:
    """A verified delivery: `id` is the event id (the webhook-id header)."""

    id: str
    type: str
    timestamp: datetime
    data: dict[str, Any]


def new_secret() -> str:
    """A new signing secret: whsec_ and 32 random bytes in base64."""
    return SECRET_PREFIX + base64.b64encode(secrets.token_bytes(32)).decode()


def _key(secret: str) -> bytes:
    raw = secret.removeprefix(SECRET_PREFIX)
    try:
        return base64.b64decode(raw, validate=True)
    except ValueError:
        raise WebhookVerificationError("the secret is not a whsec_ base64 secret") from None


def _signature(key: bytes, msg_id: str, timestamp: int, body: bytes) -> str:
    mac = hmac.new(key, f"{msg_id}.{timestamp}.".encode() + body, hashlib.sha256)
    return base64.b64encode(mac.digest()).decode()


def sign(msg_id: str, timestamp: int, body: bytes, secrets_: Iterable[str]) -> str:
    """The webhook-signature header for a body: one `v1,` signature per secret."""
    return " ".join("v1," + _signature(_key(s), msg_id, timestamp, body) for s in secrets_)


def _header(headers: Mapping[str, str], name: str) -> str:
    value = headers.get(name)
    if value is None:
        # Frameworks differ in how they case header names.
        lowered = {k.lower(): v for k, v in headers.items()}
        value = lowered.get(name)
    if not value:
        raise WebhookVerificationError(f"missing {name} header")
    return value


def verify(
    body: bytes | str,
    headers: Mapping[str, str],
    secret: str | Iterable[str],
    *,
    tolerance_s: float = TOLERANCE_S,
    now: float | None = None,
) -> WebhookEvent:
    """Check a delivery's signature and timestamp, and return its event.

    Args:
        body: the request body exactly as received (not re-serialized).
        headers: the request headers (any mapping; names in any case).
        secret: the endpoint's secret, or several (the old and new one during a rotation).

    Raises:
        WebhookVerificationError: a header is missing, no signature matches, or the
            timestamp is more than `tolerance_s` away from now.
    """
    raw = body.encode() if isinstance(body, str) else bytes(body)
    msg_id = _header(headers, "webhook-id")
    stamp = _header(headers, "webhook-timestamp")
    offered = _header(headers, "webhook-signature")
    try:
        timestamp = int(stamp)
    except ValueError:
        raise WebhookVerificationError("webhook-timestamp is not a Unix time") from None
    current = time.time() if now is None else now
    if abs(current - timestamp) > tolerance_s:
        raise WebhookVerificationError("webhook-timestamp is too old or too far ahead")
    keys = [_key(secret)] if isinstance(secret, str) else [_key(s) for s in secret]
    expected = [_signature(k, msg_id, timestamp, raw) for k in keys]
    for part in offered.split(" "):
        version, _, sig = part.partition(",")
        if version != "v1":
            continue
        if any(hmac.compare_digest(sig, e) for e in expected):
            break
    else:
        raise WebhookVerificationError("no signature matches")
    try:
        payload = json.loads(raw)
        return WebhookEvent(
            id=msg_id,
            type=payload["type"],
            timestamp=datetime.fromisoformat(payload["timestamp"]),
            data=payload["data"],
        )
    except (ValueError, KeyError, TypeError):
        raise WebhookVerificationError("the body is not a webhook payload") from None
