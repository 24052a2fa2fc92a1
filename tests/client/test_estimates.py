"""The client's estimates: affordability only when a workspace is asked about."""

from __future__ import annotations

import asyncio

from meter.client import MeterClient
from tests.support import grant

AFFORDABILITY = ("sufficient", "shortfall", "available", "suggested_package")


async def test_an_estimate_without_a_workspace_carries_no_affordability(meter):
    got = await meter.estimate_campaign(platforms=3, days=14)

    assert 30 <= got.min <= got.max <= 60
    assert [] == [field for field in AFFORDABILITY if got.HasField(field)]


async def test_an_estimate_for_a_short_workspace_carries_its_shortfall(meter, stub, ws):
    await grant(stub, ws, 20)

    got = await meter.estimate_campaign(platforms=3, days=14, workspace=ws)

    assert [True, True, True] == [
        got.HasField(field) for field in ("sufficient", "shortfall", "available")
    ]
    assert (False, got.max - 20, 20) == (got.sufficient, got.shortfall, got.available)
    assert "Starter" == got.suggested_package.name


async def test_the_blocking_client_carries_affordability_only_for_a_workspace(target, stub, ws):
    await grant(stub, ws, 500)

    def run() -> tuple[list[bool], list[bool]]:
        with MeterClient(target) as client:
            without = client.estimate_campaign(platforms=4, days=30)
            with_one = client.estimate_campaign(platforms=4, days=30, workspace=ws)
        return (
            [without.HasField(field) for field in AFFORDABILITY],
            [with_one.HasField(field) for field in AFFORDABILITY],
        )

    without, with_one = await asyncio.to_thread(run)

    assert [False, False, False, False] == without
    assert [True, True, True, False] == with_one  # sufficient: no package to suggest
