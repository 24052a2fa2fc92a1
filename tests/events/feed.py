"""Reading the event feed in tests: every event of a workspace, parsed."""

from __future__ import annotations

import json
from typing import Any

from meterpb.v1 import events_pb2 as epb
from tests.support import eventually


async def events_of(events: Any, ws: str, *types: str) -> list[tuple[str, dict[str, Any]]]:
    """(type, data) of a workspace's events so far, oldest first."""
    out, token = [], ""
    while True:
        page = await events.ListEvents(
            epb.ListEventsRequest(workspace_id=ws, types=types, page_size=1000, page_token=token)
        )
        out += [(e.type, json.loads(e.data)) for e in page.events]
        if not page.events:
            return out
        token = page.next_page_token


async def wait_events(
    events: Any, ws: str, n: int, *types: str
) -> list[tuple[str, dict[str, Any]]]:
    """The workspace's events once there are at least n (of these types)."""

    async def enough() -> list[tuple[str, dict[str, Any]]] | None:
        found = await events_of(events, ws, *types)
        return found if len(found) >= n else None

    return await eventually(enough, within=10)
