"""AIP-158 pagination: page sizes and opaque keyset page tokens bound to their query."""

from __future__ import annotations

import base64
import hashlib
import json
from collections.abc import Callable, Sequence
from typing import Any, TypeVar

from meter import errors

DEFAULT_PAGE_SIZE = 50
MAX_PAGE_SIZE = 1000

Row = TypeVar("Row")
Cursor = int | Sequence[int | str | dict[str, int]]


class Paging:
    def size(self, requested: int) -> int:
        """0 means the default; sizes above the maximum are coerced to it (AIP-158)."""
        if requested < 0:
            raise errors.invalid_field("page_size", "must not be negative")
        return min(requested or DEFAULT_PAGE_SIZE, MAX_PAGE_SIZE)

    def token(self, cursor: Cursor, key: object) -> str:
        raw = json.dumps([cursor, _digest(key)]).encode()
        return base64.urlsafe_b64encode(raw).decode().rstrip("=")

    def page(
        self, found: list[Row], size: int, key: object, cursor: Callable[[Row], Cursor]
    ) -> tuple[list[Row], str]:
        """One page from the rows a keyset query returned when asked for `size + 1` (the
        extra row only tells that another page follows): the first `size` rows, and the next
        page's token from `cursor` of the last of them, or "" on the last page."""
        if len(found) <= size:
            return found, ""
        shown = found[:size]
        return shown, self.token(cursor(shown[-1]), key)

    def cursor(self, token: str, key: object) -> int | None:
        """The id to continue below, or None for the first page.

        Raises:
            MeterError: INVALID_ARGUMENT when the token is malformed or was made for another
                query (other filters or another workspace).
        """
        value = self._decode(token, key)
        if value is None:
            return None
        if not isinstance(value, int) or isinstance(value, bool):
            raise _malformed()
        return value

    def position(self, token: str, key: object, shape: tuple[type, ...]) -> list[Any] | None:
        """A compound cursor (a feed position, a delivery and attempt) of the given types."""
        value = self._decode(token, key)
        if value is None:
            return None
        if not (
            isinstance(value, list)
            and len(value) == len(shape)
            and all(
                isinstance(v, t) and not isinstance(v, bool)
                for v, t in zip(value, shape, strict=True)
            )
        ):
            raise _malformed()
        return value

    def raw(self, token: str, key: object) -> Any:
        """A token's cursor as it was given to `token` (None for the first page), for a caller
        that checks its shape itself.

        Raises:
            MeterError: INVALID_ARGUMENT when the token is malformed or was made for another
                query.
        """
        return self._decode(token, key)

    def _decode(self, token: str, key: object) -> Any:
        if not token:
            return None
        try:
            raw = base64.urlsafe_b64decode(token + "=" * (-len(token) % 4))
            value, digest = json.loads(raw)
        except (ValueError, TypeError, UnicodeDecodeError):
            raise _malformed() from None
        if digest != _digest(key):
            raise errors.invalid_field(
                "page_token", "was made for a different query; repeat the same filters"
            )
        return value


def _malformed() -> errors.MeterError:
    return errors.invalid_field("page_token", "not a page token of this API")


def _digest(key: object) -> str:
    return hashlib.blake2b(repr(key).encode(), digest_size=8).hexdigest()
