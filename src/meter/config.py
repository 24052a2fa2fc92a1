"""Settings: from flags and METER_* environment variables, in one frozen dataclass."""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

DEFAULT_LISTEN = "127.0.0.1:50051"


def _env_bool(name: str) -> bool:
    return os.environ.get(name, "").strip().lower() in ("1", "true", "yes", "on")


def _env_int(name: str, default: int) -> int:
    value = os.environ.get(name, "").strip()
    return int(value) if value else default


def _env_path(name: str) -> Path | None:
    value = os.environ.get(name)
    return Path(value) if value else None


_UNITS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0}


def duration(text: str) -> float:
    """Seconds from a duration such as 500ms, 5s, 30m, 2h or 5d (a bare number: seconds).

    Raises:
        ValueError: not a duration, or not positive.
    """
    value = text.strip().lower()
    for unit in sorted(_UNITS, key=len, reverse=True):
        if value.endswith(unit):
            number, scale = value[: -len(unit)], _UNITS[unit]
            break
    else:
        number, scale = value, 1.0
    try:
        seconds = float(number) * scale
    except ValueError:
        raise ValueError(f"{text!r} is not a duration (examples: 500ms, 5s, 30m, 2h, 5d)") from None
    if not seconds > 0 or seconds == float("inf"):
        raise ValueError(f"{text!r}: a duration must be positive")
    return seconds


def durations(text: str) -> tuple[float, ...]:
    """A comma-separated list of durations, such as 5s,5m,30m."""
    return tuple(duration(part) for part in text.split(",") if part.strip())


def _env_duration(name: str, default: str) -> float:
    return duration(os.environ.get(name, "").strip() or default)


DEFAULT_RETRY_SCHEDULE = "5s,5m,30m,2h,5h,10h,10h"


def default_data_dir() -> Path:
    return Path(os.environ.get("METER_DATA_DIR") or Path.home() / ".local/share/meter")


@dataclass(frozen=True, slots=True)
class Settings:
    # None: start the embedded PostgreSQL in data_dir.
    database_url: str | None = field(default_factory=lambda: os.environ.get("METER_DATABASE_URL"))
    data_dir: Path = field(default_factory=default_data_dir)
    listen: str = field(default_factory=lambda: os.environ.get("METER_LISTEN", DEFAULT_LISTEN))
    require_auth: bool = field(default_factory=lambda: _env_bool("METER_REQUIRE_AUTH"))
    # PEM files: a certificate and key serve TLS; a client CA requires client certificates.
    tls_cert: Path | None = field(default_factory=lambda: _env_path("METER_TLS_CERT"))
    tls_key: Path | None = field(default_factory=lambda: _env_path("METER_TLS_KEY"))
    tls_client_ca: Path | None = field(default_factory=lambda: _env_path("METER_TLS_CLIENT_CA"))
    metrics_listen: str = field(default_factory=lambda: os.environ.get("METER_METRICS_LISTEN", ""))
    # Bind the port with SO_REUSEPORT: set for the workers of `meter serve --workers N`
    # (meter.workers), which share it.
    reuse_port: bool = False
    log_level: str = field(default_factory=lambda: os.environ.get("METER_LOG_LEVEL", "info"))
    log_format: str = field(default_factory=lambda: os.environ.get("METER_LOG_FORMAT", "json"))
    pool_size: int = field(default_factory=lambda: _env_int("METER_POOL_SIZE", 10))
    # Commit a ledger batch only while a synchronous standby streams (docs/high-availability.md).
    require_sync_standby: bool = field(
        default_factory=lambda: _env_bool("METER_REQUIRE_SYNC_STANDBY")
    )
    # Concurrent batch transactions: fewer means larger batches (less work per command),
    # more means more overlap with PostgreSQL's own work.
    batch_workers: int = field(default_factory=lambda: _env_int("METER_BATCH_WORKERS", 2))
    max_batch: int = field(default_factory=lambda: _env_int("METER_MAX_BATCH", 1000))
    sweep_interval_s: float = 1.0
    # How often watched workspaces are compared with the database, in case a notice was lost.
    watch_resync_s: float = 5.0
    catalog_refresh_s: float = 5.0
    grace_s: float = 10.0
    # Events and webhooks (DESIGN.md §9).
    event_retention_s: float = field(
        default_factory=lambda: _env_duration("METER_EVENT_RETENTION", "30d")
    )
    webhook_retry_schedule_s: tuple[float, ...] = field(
        default_factory=lambda: durations(
            os.environ.get("METER_WEBHOOK_RETRY_SCHEDULE", "").strip() or DEFAULT_RETRY_SCHEDULE
        )
    )
    webhook_disable_after_s: float = field(
        default_factory=lambda: _env_duration("METER_WEBHOOK_DISABLE_AFTER", "5d")
    )
    webhook_timeout_s: float = field(
        default_factory=lambda: _env_duration("METER_WEBHOOK_TIMEOUT", "15s")
    )
    # ExportJournal answers only entries older than this (meter.storage.export): longer than
    # any ledger transaction may last (statement_timeout 15 s, idle in transaction 30 s:
    # meter.storage.db), so no entry can commit behind an exporter's cursor. Tests lower it.
    export_lag_s: float = 120.0

    @property
    def loopback_only(self) -> bool:
        host = self.listen.rsplit(":", 1)[0].strip("[]")
        return host in ("127.0.0.1", "localhost", "::1") or host.startswith("127.")

    @property
    def auth_required(self) -> bool:
        """Asked for, or implied: beyond loopback, authentication is always on (DESIGN.md §6)."""
        return self.require_auth or not self.loopback_only


class StartupError(Exception):
    """The settings cannot be served safely; the message says what to do instead."""
