"""When authentication is on, and what a server says about it when it starts."""

from __future__ import annotations

import json

from tests.security.servers import free_port, fresh_database, meter, serving


async def test_a_server_beyond_loopback_with_no_principal_refuses_to_start(database_url):
    async with fresh_database(database_url) as url:
        code, _, err = await meter(
            "serve", "--database-url", url, "--listen", f"0.0.0.0:{free_port()}"
        )
    assert 0 != code
    assert "meter token create --role admin --name" in err
    assert "no principal" in err


async def test_require_auth_on_loopback_with_no_principal_refuses_to_start_too(database_url):
    async with fresh_database(database_url) as url:
        code, _, err = await meter(
            "serve",
            "--listen",
            f"127.0.0.1:{free_port()}",
            env={"METER_DATABASE_URL": url, "METER_REQUIRE_AUTH": "1"},
        )
    assert 0 != code
    assert "--require-auth" in err


async def test_zero_config_local_mode_says_first_that_it_is_unauthenticated(app, database_url):
    port = free_port()
    async with serving(
        "--database-url", database_url, "--listen", f"127.0.0.1:{port}", port=port
    ) as served:
        pass
    first = json.loads(served.log[0])
    assert "server.unauthenticated" == first["event"]
    assert "loopback" in first["message"]


async def test_workers_refuse_to_start_as_one_server_does(database_url):
    """Every worker would refuse alike: the supervisor stops them and says why."""
    async with fresh_database(database_url) as url:
        code, _, err = await meter(
            "serve", "--database-url", url, "--listen", f"0.0.0.0:{free_port()}", "--workers", "2"
        )
    assert 1 == code
    assert "refusing to start" in err
    assert "no principal" in err
