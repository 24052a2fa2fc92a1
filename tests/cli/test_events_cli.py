"""`meter events` and `meter webhooks` against the real server: --json matches the RPCs."""

from __future__ import annotations

import asyncio
import json
import signal
import sys
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from google.protobuf import json_format

from meterpb.v1 import events_pb2 as epb
from meterpb.v1 import events_pb2_grpc
from tests.support import eventually, grant

METER = str(Path(sys.executable).with_name("meter"))
# The discard port: nothing listens, so deliveries fail at once (connection refused).
DEAD_URL = "http://127.0.0.1:9/hook"
ENV = {"PATH": "/usr/bin:/bin", "COLUMNS": "200"}


async def meter(app, *args: str) -> tuple[int, str, str]:
    """Run `meter ARGS --target` the session's server; return (exit code, stdout, stderr)."""
    proc = await asyncio.create_subprocess_exec(
        METER,
        *args,
        "--target",
        f"127.0.0.1:{app.port}",
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
        env=ENV,
    )
    out, err = await proc.communicate()
    assert proc.returncode is not None
    return proc.returncode, out.decode(), err.decode()


@pytest.fixture
async def added(app, channel) -> AsyncIterator[list[str]]:
    """Endpoint ids a test made; deleted after it, so no failing endpoint outlives it."""
    ids: list[str] = []
    yield ids
    stub = events_pb2_grpc.EventsStub(channel)
    found = await stub.ListWebhookEndpoints(epb.ListWebhookEndpointsRequest())
    for e in found.endpoints:
        if e.endpoint_id in ids:  # not the ones the test deleted itself
            await stub.DeleteWebhookEndpoint(
                epb.DeleteWebhookEndpointRequest(endpoint_id=e.endpoint_id)
            )


async def add(app, added: list[str], ws: str, *args: str) -> epb.CreateWebhookEndpointResponse:
    """`meter webhooks add` a dead URL for this test's workspace only; the parsed answer."""
    code, out, err = await meter(
        app, "webhooks", "add", DEAD_URL, "--workspace", ws, *args, "--json"
    )
    assert 0 == code, err
    done = json_format.ParseDict(json.loads(out), epb.CreateWebhookEndpointResponse())
    added.append(done.endpoint.endpoint_id)
    return done


async def listed(app) -> tuple[str, dict[str, epb.WebhookEndpoint]]:
    code, out, err = await meter(app, "webhooks", "list", "--json")
    assert 0 == code, err
    found = json_format.ParseDict(json.loads(out), epb.ListWebhookEndpointsResponse())
    return out, {e.endpoint_id: e for e in found.endpoints}


async def test_add_with_a_bad_url_exits_1_and_prints_the_violation(app):
    code, out, err = await meter(app, "webhooks", "add", "ftp://x")

    assert 1 == code
    assert "INVALID_ARGUMENT" in err
    assert "url: must be an http or https URL" in err
    assert "" == out


async def test_add_json_has_the_secret_and_list_never_shows_it(app, ws, added):
    done = await add(app, added, ws, "--type", "balance.low", "--description", "ops pager")

    assert done.endpoint.endpoint_id
    assert done.secret.startswith("whsec_")
    assert (["balance.low"], [ws], "ops pager", True) == (
        list(done.endpoint.event_types),
        list(done.endpoint.workspace_ids),
        done.endpoint.description,
        done.endpoint.enabled,
    )
    out, endpoints = await listed(app)
    assert done.endpoint == endpoints[done.endpoint.endpoint_id]
    assert done.secret not in out
    assert "whsec_" not in out
    assert "secret" not in out  # no field of that name either, even an empty one


async def test_add_prints_the_secret_once_with_a_warning(app, ws, added):
    code, out, err = await meter(app, "webhooks", "add", DEAD_URL, "--workspace", ws)

    assert 0 == code, err
    endpoint = next(e for e in (await listed(app))[1].values() if ws in e.workspace_ids)
    added.append(endpoint.endpoint_id)
    assert endpoint.endpoint_id in out
    secret = next(line for line in out.splitlines() if "whsec_" in line)
    assert secret.startswith("signing secret: whsec_")
    assert "it will not be shown again" in out
    code, table, _ = await meter(app, "webhooks", "list")
    assert 0 == code
    assert endpoint.endpoint_id in table
    assert "whsec_" not in table


async def test_disable_and_enable_flip_enabled(app, ws, added):
    endpoint_id = (await add(app, added, ws)).endpoint.endpoint_id

    code, out, err = await meter(app, "webhooks", "disable", endpoint_id, "--json")

    assert 0 == code, err
    assert json.loads(out)["enabled"] is False
    assert not (await listed(app))[1][endpoint_id].enabled
    code, out, err = await meter(app, "webhooks", "enable", endpoint_id)
    assert 0 == code, err
    assert f"enabled {endpoint_id}" in out
    assert (await listed(app))[1][endpoint_id].enabled


async def test_delete_removes_the_endpoint(app, ws, added):
    endpoint_id = (await add(app, added, ws)).endpoint.endpoint_id

    code, out, err = await meter(app, "webhooks", "delete", endpoint_id)

    assert 0 == code, err
    assert f"deleted {endpoint_id}" in out
    assert endpoint_id not in (await listed(app))[1]
    code, _, err = await meter(app, "webhooks", "delete", endpoint_id)
    assert 1 == code
    assert "NOT_FOUND" in err


async def test_rotate_prints_a_new_secret_and_the_old_ones_expiry(app, ws, added):
    first = await add(app, added, ws)
    endpoint_id = first.endpoint.endpoint_id

    code, out, err = await meter(app, "webhooks", "rotate", endpoint_id, "--json")

    assert 0 == code, err
    done = json_format.ParseDict(json.loads(out), epb.RotateWebhookSecretResponse())
    assert done.secret.startswith("whsec_")
    assert first.secret != done.secret
    assert done.endpoint.HasField("previous_secret_expire_time")
    listing, endpoints = await listed(app)
    assert endpoints[endpoint_id].HasField("previous_secret_expire_time")
    assert done.secret not in listing


async def test_events_json_lists_a_grant_of_the_workspace(app, stub, ws):
    granted = await grant(stub, ws, 25)

    async def granted_events() -> list[dict[str, object]]:
        code, out, err = await meter(app, "events", ws, "--json")
        assert 0 == code, err
        return [e for e in json.loads(out)["events"] if e["type"] == "credits.granted"]

    found = await eventually(granted_events)  # the feed can lag the commit by a few ms

    assert [ws] == [e["workspace_id"] for e in found]
    event = found[0]
    assert 1 <= int(str(event["sequence"]))
    data = json.loads(str(event["data"]))
    assert (25, granted.entry.request_id) == (data["amount"], data["request_id"])
    code, table, _ = await meter(app, "events", ws, "--type", "credits.granted")
    assert 0 == code
    assert str(event["event_id"]) in table


async def test_events_of_an_unknown_type_exit_1_naming_it(app, ws):
    code, _, err = await meter(app, "events", ws, "--type", "nonsense")

    assert 1 == code
    assert "INVALID_ARGUMENT" in err
    assert "'nonsense'" in err


async def test_events_follow_prints_new_events_and_ctrl_c_exits_0(app, stub, ws):
    proc = await asyncio.create_subprocess_exec(
        METER, "events", ws, "--follow", "--json", "--target", f"127.0.0.1:{app.port}",
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE, env=ENV,
    )  # fmt: skip
    assert proc.stdout is not None
    lines: list[str] = []
    try:
        await grant(stub, ws, 7)
        # The command starts a Python process and a gRPC channel first: on a busy machine
        # that alone takes seconds.
        line = await asyncio.wait_for(proc.stdout.readline(), timeout=60)
        lines.append(line.decode())
        event = json.loads(line)
        assert ("credits.granted", ws) == (event["type"], event["workspace_id"])
        await grant(stub, ws, 8)
        line = await asyncio.wait_for(proc.stdout.readline(), timeout=30)
        lines.append(line.decode())
        assert 8 == json.loads(json.loads(line)["data"])["amount"]
    except TimeoutError:
        proc.send_signal(signal.SIGINT)
        _, err = await asyncio.wait_for(proc.communicate(), timeout=15)
        raise AssertionError(f"no event line; printed {lines}, stderr {err.decode()}") from None
    finally:
        if proc.returncode is None:
            proc.send_signal(signal.SIGINT)
        _, err = await asyncio.wait_for(proc.communicate(), timeout=15)

    assert 0 == proc.returncode, err.decode()


async def test_test_of_a_dead_endpoint_exits_1_and_its_deliveries_show_why(app, stub, ws, added):
    endpoint_id = (await add(app, added, ws, "--type", "credits.granted")).endpoint.endpoint_id

    code, out, _ = await meter(app, "webhooks", "test", endpoint_id, "--json")

    assert 1 == code
    attempt = json_format.ParseDict(json.loads(out), epb.SendTestEventResponse()).attempt
    assert ("webhook.test", 0) == (attempt.event_type, attempt.http_status)
    assert attempt.error
    await grant(stub, ws, 3)

    async def attempts() -> list[epb.DeliveryAttempt]:
        code, out, err = await meter(app, "webhooks", "deliveries", endpoint_id, "--json")
        assert 0 == code, err
        found = json_format.ParseDict(json.loads(out), epb.ListDeliveriesResponse()).attempts
        return [a for a in found if a.event_type == "credits.granted"]

    failed = (await eventually(attempts))[0]
    assert (endpoint_id, 0) == (failed.endpoint_id, failed.http_status)
    assert failed.error


async def test_replay_takes_since_or_events(app, stub, ws, added):
    endpoint_id = (await add(app, added, ws, "--type", "credits.granted")).endpoint.endpoint_id

    code, _, err = await meter(app, "webhooks", "replay", endpoint_id)
    assert 2 == code
    assert "--since" in err
    code, _, _ = await meter(app, "webhooks", "replay", endpoint_id, "--since", "yesterday")
    assert 2 == code

    await grant(stub, ws, 4)

    async def in_the_feed() -> bool:
        code, out, err = await meter(app, "events", ws, "--type", "credits.granted", "--json")
        assert 0 == code, err
        return bool(json.loads(out)["events"])

    await eventually(in_the_feed)
    code, out, err = await meter(
        app, "webhooks", "replay", endpoint_id, "--since", "2000-01-01", "--json"
    )
    assert 0 == code, err
    assert 1 == json.loads(out)["queued"]


async def test_every_events_command_shows_an_example_in_its_help():
    commands = [["events"], ["webhooks"]] + [
        ["webhooks", c]
        for c in ("add", "list", "disable", "enable", "delete", "rotate", "deliveries",
                  "replay", "test")
    ]  # fmt: skip

    async def help_of(command: list[str]) -> str:
        proc = await asyncio.create_subprocess_exec(
            METER, *command, "--help", stdout=asyncio.subprocess.PIPE, env={"COLUMNS": "200"}
        )
        out, _ = await proc.communicate()
        assert 0 == proc.returncode
        return out.decode().lower()

    helps = await asyncio.gather(*(help_of(c) for c in commands))

    assert [] == [" ".join(c) for c, h in zip(commands, helps, strict=True) if "example:" not in h]
