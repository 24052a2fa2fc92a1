"""Events, webhook endpoints and delivery attempts, as the services and the dispatcher see them."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from enum import IntEnum

EVENT_PREFIX = "evt_"


def event_id(workspace_id: str, sequence: int) -> str:
    """`evt_<sequence>_<workspace_id>`, or `evt_<sequence>` for an event about no workspace:
    unique, stable, and enough to find the row again (no index on a second key)."""
    if workspace_id:
        return f"{EVENT_PREFIX}{sequence}_{workspace_id}"
    return f"{EVENT_PREFIX}{sequence}"


def parse_event_id(value: str) -> tuple[str, int] | None:
    """(workspace_id, sequence) of an event id; None if it is not one."""
    if not value.startswith(EVENT_PREFIX):
        return None
    seq, _, workspace_id = value[len(EVENT_PREFIX) :].partition("_")
    if not seq.isdigit() or len(seq) > 18:
        return None
    return workspace_id, int(seq)


class DeliveryState(IntEnum):
    """Stored values; the proto's enum numbers are one higher."""

    PENDING = 0
    DELIVERED = 1
    FAILED = 2


@dataclass(frozen=True, slots=True)
class StoredEvent:
    workspace_id: str
    sequence: int
    type: str
    created_at: datetime
    data: str  # the JSON object, as stored

    @property
    def event_id(self) -> str:
        return event_id(self.workspace_id, self.sequence)


# Where a reader of the whole feed has got to: the last position passed in each shard group's
# feed, by the group's feed key (meter.storage.events_repo).
GroupPositions = dict[str, int]


@dataclass(frozen=True, slots=True)
class Endpoint:
    endpoint_id: str
    url: str
    description: str
    event_types: tuple[str, ...]
    workspace_ids: tuple[str, ...]
    enabled: bool
    disabled_reason: str
    failing_since: datetime | None
    previous_until: datetime | None
    created_at: datetime
    updated_at: datetime
    # Never shown after creation or rotation, never logged (repr=False).
    secrets: tuple[str, ...] = field(default=(), repr=False)


@dataclass(frozen=True, slots=True)
class Attempt:
    endpoint_id: str
    event_id: str
    event_type: str
    attempt: int
    attempted_at: datetime
    status: int
    error: str
    latency_ms: int
    next_attempt_at: datetime | None
    state: DeliveryState
    replay: bool
    delivery_id: int = 0


@dataclass(frozen=True, slots=True)
class Claimed:
    """A delivery leased to this replica for one attempt."""

    workspace_id: str
    delivery_id: int
    attempt: int  # this attempt's number, 1 for the first
    replay: bool
    event: StoredEvent
    feed_key: str = ""  # the shard group's the delivery is stored in
