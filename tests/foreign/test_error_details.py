"""A refusal's details as foreign gRPC tools show them, against the session's real server.

Every refusal carries google.rpc.ErrorInfo (and BadRequest, RetryInfo where they apply) as
`Any`s. A tool that does not have those types compiled in must ask the server's reflection for
them: grpcurl does (its binary holds no google/rpc/error_details.proto), so it prints reason,
metadata and field violations. buf curl 1.75 never asks: it decodes details only with the types
compiled into it and prints the others as `type` and base64 `value`; those bytes, decoded by
`buf convert` with the descriptors reflection serves, give the same fields.
"""

from __future__ import annotations

import asyncio
import base64
import json
from pathlib import Path
from typing import Any

import pytest
from google.protobuf import descriptor_pb2, descriptor_pool, json_format, message_factory
from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc

from meter.errors import FieldViolation, Kind, MeterError
from meter.rpc.errors import status_proto
from tests.support import grant, rid

TYPE_PREFIX = "type.googleapis.com/"


async def run(*argv: str | Path) -> tuple[int, str, str]:
    """Run a tool to its end (asynchronously: the server answers on this event loop)."""
    proc = await asyncio.create_subprocess_exec(
        *map(str, argv), stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE
    )
    out, err = await asyncio.wait_for(proc.communicate(), 60)
    assert proc.returncode is not None
    return proc.returncode, out.decode(), err.decode()


async def reflected_files(channel: Any, symbols: list[str]) -> descriptor_pb2.FileDescriptorSet:
    """The files the server's reflection gives for `symbols`, dependencies included."""
    stub = reflection_pb2_grpc.ServerReflectionStub(channel)

    async def ask():
        for s in symbols:
            yield reflection_pb2.ServerReflectionRequest(file_containing_symbol=s)

    found: dict[str, descriptor_pb2.FileDescriptorProto] = {}
    async for answer in stub.ServerReflectionInfo(ask()):
        assert "file_descriptor_response" == answer.WhichOneof("message_response"), answer
        for raw in answer.file_descriptor_response.file_descriptor_proto:
            f = descriptor_pb2.FileDescriptorProto.FromString(raw)
            found.setdefault(f.name, f)
    files = descriptor_pb2.FileDescriptorSet()

    def add(name: str) -> None:  # dependencies first, as a descriptor pool needs them
        if name in found:
            f = found.pop(name)
            for dependency in f.dependency:
                add(dependency)
            files.file.append(f)

    for name in list(found):
        add(name)
    return files


async def insufficient_credits(stub: Any, ws: str) -> dict[str, Any]:
    await grant(stub, ws, 30)
    return {"workspace_id": ws, "request_id": rid(), "amount": 200}


INSUFFICIENT_METADATA = {
    "required": "200",
    "available": "30",
    "shortfall": "170",
    "suggested_package": "Basic",
}
# One bad field of each kind: a missing id, a malformed one, an amount out of range.
BAD_REQUEST = {"workspace_id": "", "request_id": "no spaces", "amount": -5}
BAD_FIELDS = ["workspace_id", "request_id", "amount"]


async def test_reflection_describes_every_detail_type_that_meter_sends(channel):
    """Decoded with nothing but what reflection serves, each detail is what was sent."""
    error = MeterError(
        Kind.ABORTED,
        "REQUEST_IN_PROGRESS",
        "busy",
        metadata={"request_id": "job-1"},
        violations=[FieldViolation("request_id", "in progress")],
        retry_after=0.25,
    )
    details = list(status_proto(error).details)  # every kind of detail status_proto makes
    types = [d.type_url.removeprefix(TYPE_PREFIX) for d in details]
    assert {"google.rpc.ErrorInfo", "google.rpc.BadRequest", "google.rpc.RetryInfo"} == set(types)

    pool = descriptor_pool.DescriptorPool()
    for f in (await reflected_files(channel, types)).file:
        pool.Add(f)
    for name, detail in zip(types, details, strict=True):
        decoded = message_factory.GetMessageClass(pool.FindMessageTypeByName(name))()
        decoded.ParseFromString(detail.value)
        sent = message_factory.GetMessageClass(
            descriptor_pool.Default().FindMessageTypeByName(name)
        ).FromString(detail.value)
        assert json_format.MessageToDict(sent) == json_format.MessageToDict(decoded)


async def test_grpcurl_prints_the_reason_and_metadata_of_insufficient_credits(
    grpcurl, app, stub, ws
):
    request = await insufficient_credits(stub, ws)

    code, _, err = await run(
        grpcurl, "-plaintext", "-format-error", "-d", json.dumps(request),
        f"127.0.0.1:{app.port}", "meter.v1.Meter/Reserve",
    )  # fmt: skip

    assert 64 + 9 == code  # grpcurl exits 64 + the status code (FAILED_PRECONDITION)
    status = json.loads(err)
    assert 9 == status["code"]
    [info] = status["details"]
    assert {
        "@type": TYPE_PREFIX + "google.rpc.ErrorInfo",
        "reason": "INSUFFICIENT_CREDITS",
        "domain": "meter",
        "metadata": INSUFFICIENT_METADATA,
    } == info


async def test_grpcurl_prints_the_field_violations_of_a_bad_request(grpcurl, app):
    code, _, err = await run(
        grpcurl, "-plaintext", "-format-error", "-d", json.dumps(BAD_REQUEST),
        f"127.0.0.1:{app.port}", "meter.v1.Meter/Reserve",
    )  # fmt: skip

    assert 64 + 3 == code  # INVALID_ARGUMENT
    info, bad = json.loads(err)["details"]
    assert ("INVALID_ARGUMENT", "meter") == (info["reason"], info["domain"])
    assert TYPE_PREFIX + "google.rpc.BadRequest" == bad["@type"]
    assert BAD_FIELDS == [v["field"] for v in bad["field_violations"]]
    assert all(v["description"] for v in bad["field_violations"])


async def buf_curl(buf: Path, port: int, request: dict[str, Any]) -> tuple[int, dict[str, Any]]:
    code, out, err = await run(
        buf, "curl", "--protocol", "grpc", "--http2-prior-knowledge", "-d", json.dumps(request),
        f"http://127.0.0.1:{port}/meter.v1.Meter/Reserve",
    )  # fmt: skip
    return code, json.loads(out or err)


async def buf_convert(buf: Path, image: Path, detail: dict[str, str], tmp: Path) -> Any:
    """What `buf convert` prints for one of buf curl's base64 details, with `image`'s types."""
    payload = tmp / "detail.binpb"
    value = detail["value"]
    payload.write_bytes(base64.b64decode(value + "=" * (-len(value) % 4)))  # unpadded base64
    code, out, err = await run(
        buf, "convert", image, "--type", detail["type"], "--from", payload, "--to", "-#format=json"
    )
    assert 0 == code, err
    return json.loads(out)


@pytest.mark.parametrize(
    ("refusal", "code", "name"),
    [("insufficient_credits", 9, "failed_precondition"), ("bad_request", 3, "invalid_argument")],
)
async def test_buf_curl_details_decode_with_the_descriptors_that_reflection_serves(
    refusal, code, name, buf, app, stub, channel, ws, tmp_path
):
    request = await insufficient_credits(stub, ws) if refusal != "bad_request" else BAD_REQUEST

    exit_code, status = await buf_curl(buf, app.port, request)

    assert (8 * code, name) == (exit_code, status["code"])  # buf exits 8 times the status code
    types = [d["type"] for d in status["details"]]
    image = tmp_path / "image.binpb"
    image.write_bytes((await reflected_files(channel, types)).SerializeToString())
    decoded = [await buf_convert(buf, image, d, tmp_path) for d in status["details"]]
    if refusal == "insufficient_credits":
        assert ["google.rpc.ErrorInfo"] == types
        assert [
            {"reason": "INSUFFICIENT_CREDITS", "domain": "meter", "metadata": INSUFFICIENT_METADATA}
        ] == decoded
    else:
        assert ["google.rpc.ErrorInfo", "google.rpc.BadRequest"] == types
        assert "INVALID_ARGUMENT" == decoded[0]["reason"]
        assert BAD_FIELDS == [v["field"] for v in decoded[1]["fieldViolations"]]
