"""Secrets stay secret: tokens, their hashes, the TLS key and the database password appear in
no log line, no error message and no `meter token` output, whatever the calls did."""

from __future__ import annotations

import json
import uuid

import grpc
import sqlalchemy as sa

from meter.auth.model import token_hash
from meterpb.v1 import meter_pb2 as pb
from meterpb.v1 import meter_pb2_grpc
from tests.security.certs import Certs
from tests.security.conftest import bearer
from tests.security.servers import free_port, meter, serving
from tests.support import eventually


def with_password(database_url: str) -> tuple[str, str]:
    """The URL with a password in it (the test server trusts local connections, so an
    invented one is accepted and merely has to stay out of the logs)."""
    url = sa.engine.make_url(database_url)
    password = url.password or f"pw-{uuid.uuid4().hex}"
    return url.set(password=password).render_as_string(hide_password=False), str(password)


async def test_no_secret_reaches_logs_answers_or_cli_output(app, database_url, tls_files: Certs):
    url, password = with_password(database_url)
    tag = uuid.uuid4().hex[:8]
    ws, other = f"ws-sec-{tag}", f"ws-sec-other-{tag}"
    seen: list[str] = []  # everything a person or a log collector would get to read

    async def create(*args: str) -> str:
        code, out, err = await meter("token", "create", *args, "--database-url", url)
        assert 0 == code, err
        seen.append(err)
        return out.strip()

    admin = await create("--role", "admin", "--name", f"sec-admin-{tag}")
    worker = await create("--role", "worker", "--name", f"sec-worker-{tag}", "--workspace", ws)
    victim = await create("--role", "app", "--name", f"sec-victim-{tag}")
    tokens = [admin, worker, victim]
    code, out, err = await meter("token", "list", "--json", "--database-url", url)
    assert 0 == code
    seen += [out, err]
    listed = {p["name"]: p for p in json.loads(out)}
    assert [ws] == listed[f"sec-worker-{tag}"]["workspaces"]

    port = free_port()
    ca = grpc.ssl_channel_credentials(root_certificates=tls_files.ca.read_bytes())
    args = ["--database-url", url, "--listen", f"127.0.0.1:{port}", "--require-auth"]
    args += ["--tls-cert", str(tls_files.server.cert), "--tls-key", str(tls_files.server.key)]
    async with (
        serving(*args, port=port, credentials=ca) as served,
        grpc.aio.secure_channel(f"127.0.0.1:{port}", ca) as ch,
    ):
        stub = meter_pb2_grpc.MeterStub(ch)

        async def attempt(call: object) -> str:
            try:
                await call  # type: ignore[misc]
            except grpc.aio.AioRpcError as e:
                seen.append(f"{e.code().name} {e.details()} {e.debug_error_string()}")
                return e.code().name
            return "OK"

        def grant(w: str, token: str) -> object:
            req = pb.GrantCreditsRequest(workspace_id=w, request_id=uuid.uuid4().hex, amount=9)
            return stub.GrantCredits(req, metadata=bearer(token))

        def charge(w: str, md: object) -> object:
            req = pb.ChargeRequest(workspace_id=w, request_id=uuid.uuid4().hex, amount=1)
            return stub.Charge(req, metadata=md)

        assert "OK" == await attempt(grant(ws, admin))
        assert "OK" == await attempt(charge(ws, bearer(worker)))
        assert "PERMISSION_DENIED" == await attempt(charge(other, bearer(worker)))
        assert "PERMISSION_DENIED" == await attempt(grant(ws, worker))
        assert "NOT_FOUND" == await attempt(charge(other, bearer(admin)))
        for md in (
            (("authorization", f"Bearer {admin[:-1]}"),),
            (("authorization", f"Bearer {admin}x"),),
            (("authorization", admin),),
            (("authorization", f"Basic {admin}"),),
            (("authorization", f"Bearer {token_hash(admin)}"),),
        ):
            assert "UNAUTHENTICATED" == await attempt(charge(ws, md))
        get = pb.GetBalanceRequest(workspace_id=ws)
        assert "OK" == await attempt(stub.GetBalance(get, metadata=bearer(victim)))
        code, out, err = await meter("token", "revoke", f"sec-victim-{tag}", "--database-url", url)
        assert 0 == code
        seen += [out, err]

        async def refused() -> bool:
            answer = await attempt(stub.GetBalance(get, metadata=bearer(victim)))
            return "UNAUTHENTICATED" == answer

        await eventually(refused, within=5)

    log = "".join(served.log)
    events = [json.loads(line) for line in served.log]
    codes = {e.get("code") for e in events if e.get("event") == "call.finished"}
    assert {"OK", "PERMISSION_DENIED", "UNAUTHENTICATED", "NOT_FOUND"} <= codes
    key_lines = [
        line
        for line in tls_files.server.key.read_text().splitlines()
        if line and not line.startswith("-----")
    ]
    secrets = [*tokens, *(token_hash(t) for t in tokens), *(t[4:24] for t in tokens)]
    secrets += [password, *key_lines]
    everything = log + "\n".join(seen)
    assert [] == [s for s in secrets if s in everything]
