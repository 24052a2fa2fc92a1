"""Settings: from flags and METER_* environment variables, in one frozen dataclass."""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

DEFAULT_LISTEN = "127.0.0.1:50051"


def _env_bool(name: str) -> bool:
    return os.environ.get(name, "").strip().lower() in ("1", "true", "yes", "on")


def default_data_dir() -> Path:
    return Path(os.environ.get("METER_DATA_DIR") or Path.home() / ".local/share/meter")


@dataclass(frozen=True, slots=True)
class Settings:
    # None: start the embedded PostgreSQL in data_dir.
    database_url: str | None = field(default_factory=lambda: os.environ.get("METER_DATABASE_URL"))
    data_dir: Path = field(default_factory=default_data_dir)
    listen: str = field(default_factory=lambda: os.environ.get("METER_LISTEN", DEFAULT_LISTEN))
    require_auth: bool = field(default_factory=lambda: _env_bool("METER_REQUIRE_AUTH"))
    metrics_listen: str = field(default_factory=lambda: os.environ.get("METER_METRICS_LISTEN", ""))
    log_level: str = field(default_factory=lambda: os.environ.get("METER_LOG_LEVEL", "info"))
    log_format: str = field(default_factory=lambda: os.environ.get("METER_LOG_FORMAT", "json"))
    pool_size: int = 10
    batch_workers: int = 4
    max_batch: int = 1000
    sweep_interval_s: float = 1.0
    catalog_refresh_s: float = 5.0
    grace_s: float = 10.0

    @property
    def loopback_only(self) -> bool:
        host = self.listen.rsplit(":", 1)[0].strip("[]")
        return host in ("127.0.0.1", "localhost", "::1") or host.startswith("127.")
