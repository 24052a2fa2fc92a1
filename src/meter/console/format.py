"""How numbers, times and enum values read on a page: thousands separators, UTC dates."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from jinja2 import Environment

from meterpb.v1 import catalog_pb2, events_pb2, meter_pb2


def credits(value: int | None) -> str:
    """1234567 -> '1,234,567'; a signed change keeps its sign ('+250', '-3')."""
    return f"{int(value or 0):,}"


def decimal(value: float | None, places: int = 1) -> str:
    """2.345 -> '2.3': rates and days, which are not whole credits."""
    return f"{float(value or 0):,.{places}f}"


def signed(value: int | None) -> str:
    return f"{int(value or 0):+,}"


def moment(ts: Any) -> datetime | None:
    """A protobuf Timestamp as an aware datetime, or None when unset."""
    if ts is None or (not ts.seconds and not ts.nanos):
        return None
    return ts.ToDatetime(tzinfo=UTC)  # type: ignore[no-any-return]


def when(ts: Any) -> str:
    """'12 Mar 2025, 14:03 UTC', or '—' when unset."""
    at = ts if isinstance(ts, datetime) else moment(ts)
    return at.strftime("%-d %b %Y, %H:%M UTC") if at else "—"


def day(ts: Any) -> str:
    at = ts if isinstance(ts, datetime) else moment(ts)
    return at.strftime("%-d %b %Y") if at else "—"


def iso(ts: Any) -> str:
    at = ts if isinstance(ts, datetime) else moment(ts)
    return at.isoformat().replace("+00:00", "Z") if at else ""


def enum(value: int, enum_type: Any, prefix: str) -> str:
    """ENTRY_KIND_GRANT -> 'grant'."""
    try:
        name = str(enum_type.Name(value))
    except ValueError:
        return str(value)
    return name.removeprefix(prefix).lower().replace("_", " ")


def money(cents: int, currency: str) -> str:
    symbol = {"USD": "$", "EUR": "€", "GBP": "£"}.get(currency.upper(), "")
    amount = f"{cents / 100:,.2f}".removesuffix(".00")
    return f"{symbol}{amount}" if symbol else f"{amount} {currency}"


def install(env: Environment) -> None:
    env.globals.update(pb=meter_pb2, cpb=catalog_pb2, epb=events_pb2)
    env.filters.update(
        credits=credits,
        decimal=decimal,
        signed=signed,
        when=when,
        day=day,
        iso=iso,
        enum=enum,
        money=money,
    )
