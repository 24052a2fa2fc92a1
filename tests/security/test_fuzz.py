"""Hostile input: random and adversarial values in every field of every request of both
services. Whatever comes in, the answer is a documented status (never UNKNOWN or INTERNAL),
the server stays up, and a refused call leaves balances, journal and holds as they were.

Bounded for CI by the `security` hypothesis profile (examples per RPC, no deadline); set
METER_FUZZ_EXAMPLES to run longer locally.
"""

from __future__ import annotations

import os
import uuid
from typing import Any

import grpc
import pytest
from google.protobuf import duration_pb2, timestamp_pb2
from google.protobuf.descriptor import Descriptor, FieldDescriptor
from google.protobuf.message import Message
from grpc_health.v1 import health_pb2, health_pb2_grpc
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from meter.ledger.validation import ID_RE
from meterpb.v1 import catalog_pb2, meter_pb2
from tests.support import Db, grant, reserve

settings.register_profile(
    "security",
    max_examples=int(os.environ.get("METER_FUZZ_EXAMPLES", "40")),
    deadline=None,
    derandomize=False,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)

SEED = f"ws-fuzz-{uuid.uuid4().hex[:8]}"
DOCUMENTED = {
    grpc.StatusCode.OK,
    grpc.StatusCode.INVALID_ARGUMENT,
    grpc.StatusCode.NOT_FOUND,
    grpc.StatusCode.FAILED_PRECONDITION,
    grpc.StatusCode.ABORTED,
    grpc.StatusCode.RESOURCE_EXHAUSTED,
    grpc.StatusCode.DEADLINE_EXCEEDED,  # a wait for funds that outlives the call's deadline
}
INT32 = (-(2**31), 2**31 - 1)
INT64 = (-(2**63), 2**63 - 1)

strings = st.one_of(
    st.sampled_from(
        [
            "",
            SEED,
            "seed-hold",
            "seed-charge",
            "post.generate",
            "starter",
            "a" * 128,
            "a" * 129,
            " ",
            "ws/../../etc",
            "'; DROP TABLE journal; --",
            "%s%n{0}",
        ]
    ),
    st.from_regex(r"[A-Za-z0-9._:-]{1,130}", fullmatch=True),
    st.text(max_size=80),
    st.text(alphabet=st.characters(max_codepoint=0x1F), max_size=20),
    st.text(alphabet="\u202e\u200b\ufeff\U0001f600é中", max_size=40),
    st.integers(0, 2_000_000).map(lambda n: "x" * n),
)


def ints(lo: int, hi: int) -> st.SearchStrategy[int]:
    edges = [v for v in (lo, hi, 0, -1, 10**12, 10**12 + 1, 601, 86_401) if lo <= v <= hi]
    return st.one_of(st.integers(max(lo, -3), 3000), st.sampled_from(edges), st.integers(lo, hi))


durations = st.builds(
    duration_pb2.Duration,
    seconds=ints(-315_576_000_000, 315_576_000_000),
    nanos=ints(-999_999_999, 999_999_999),
)
timestamps = st.builds(
    timestamp_pb2.Timestamp,
    seconds=ints(-62_135_596_800, 253_402_300_799),
    nanos=ints(0, 999_999_999),
)


def scalar(f: FieldDescriptor, depth: int) -> st.SearchStrategy[Any]:
    if f.type == FieldDescriptor.TYPE_STRING:
        return strings
    if f.type == FieldDescriptor.TYPE_BOOL:
        return st.booleans()
    if f.type == FieldDescriptor.TYPE_ENUM:
        return st.one_of(st.integers(-2, 8), st.integers(*INT32))  # unknown numbers too
    if f.type in (FieldDescriptor.TYPE_INT32,):
        return ints(*INT32)
    if f.type in (FieldDescriptor.TYPE_INT64,):
        return ints(*INT64)
    if f.type == FieldDescriptor.TYPE_MESSAGE:
        return message(f.message_type, depth + 1)
    raise AssertionError(f"no strategy for {f.full_name}")


def message(d: Descriptor, depth: int = 0) -> st.SearchStrategy[Any]:
    """Any message of this type, each field set or not, recursively."""
    if d.full_name == "google.protobuf.Duration":
        return durations
    if d.full_name == "google.protobuf.Timestamp":
        return timestamps
    fields: dict[str, st.SearchStrategy[Any]] = {}
    for f in d.fields:
        if f.message_type is not None and f.message_type.GetOptions().map_entry:
            fields[f.name] = st.dictionaries(strings, strings, max_size=20)
        elif f.is_repeated:
            if depth > 1:
                continue
            fields[f.name] = st.lists(scalar(f, depth), max_size=4 if f.message_type else 60)
        else:
            fields[f.name] = scalar(f, depth)
    cls = meter_pb2 if d.file.name.endswith("meter.proto") else catalog_pb2

    def build(values: dict[str, Any]) -> Message:
        m = getattr(cls, d.name)()
        for name, value in values.items():
            f = d.fields_by_name[name]
            if f.message_type is not None and f.message_type.GetOptions().map_entry:
                getattr(m, name).update(value)
            elif f.is_repeated:
                if f.message_type is not None:
                    for v in value:
                        getattr(m, name).add().CopyFrom(v)
                else:
                    getattr(m, name).extend(value)
            elif f.message_type is not None:
                getattr(m, name).CopyFrom(value)
            else:
                setattr(m, name, value)
        return m

    return st.fixed_dictionaries({}, optional=fields).map(build)


def methods() -> list[tuple[str, str]]:
    out = []
    for module, service in ((meter_pb2, "Meter"), (catalog_pb2, "Catalog")):
        for m in module.DESCRIPTOR.services_by_name[service].methods:
            out.append((service, m.name))
    return out


@pytest.fixture(scope="module")
async def seeded(stub, db: Db) -> str:
    await grant(stub, SEED, 1000)
    await reserve(stub, SEED, "seed-hold", 10)
    await stub.Charge(
        meter_pb2.ChargeRequest(workspace_id=SEED, request_id="seed-charge", amount=5)
    )
    return SEED


async def invoke(channel: grpc.aio.Channel, service: str, method: str, request: Message) -> Any:
    """The call's status code, and the codes of any Stream results."""
    path = f"/meter.v1.{service}/{method}"
    desc = (
        (meter_pb2 if service == "Meter" else catalog_pb2)
        .DESCRIPTOR.services_by_name[service]
        .methods_by_name[method]
    )
    out_cls = getattr(meter_pb2 if service == "Meter" else catalog_pb2, desc.output_type.name)
    kw = {
        "request_serializer": type(request).SerializeToString,
        "response_deserializer": out_cls.FromString,
    }
    results: list[int] = []
    try:
        if desc.client_streaming:
            call = channel.stream_stream(path, **kw)(timeout=5)
            await call.write(request)
            await call.done_writing()
            async for answer in call:
                results += [r.status.code for r in answer.results]
        elif desc.server_streaming:
            call = channel.unary_stream(path, **kw)(request, timeout=2)
            await call.read()
            call.cancel()
        else:
            await channel.unary_unary(path, **kw)(request, timeout=3)
    except grpc.aio.AioRpcError as e:
        return e.code(), results
    return grpc.StatusCode.OK, results


@pytest.mark.parametrize(("service", "method"), methods(), ids=lambda v: v)
@settings(settings.get_profile("security"))
@given(data=st.data())
async def test_hostile_requests_get_documented_answers_and_change_nothing_when_refused(
    service, method, data, channel, db: Db, seeded
):
    desc = (
        (meter_pb2 if service == "Meter" else catalog_pb2)
        .DESCRIPTOR.services_by_name[service]
        .methods_by_name[method]
    )
    request = data.draw(message(desc.input_type), label="request")
    # Ids outside the id rules cannot name a stored workspace (and some cannot even be sent to
    # PostgreSQL, such as NUL); the seeded workspace is always watched.
    touched = {seeded} | {w for w in [getattr(request, "workspace_id", "")] if ID_RE.fullmatch(w)}
    before = {w: db.snapshot(w) for w in touched}
    code, results = await invoke(channel, service, method, request)
    assert code in DOCUMENTED, (code, request)
    assert not {2, 13} & set(results), (results, request)  # UNKNOWN, INTERNAL
    if code is not grpc.StatusCode.OK or (results and 0 not in results):
        assert before == {w: db.snapshot(w) for w in touched}


async def test_the_server_is_still_serving_after_the_fuzzing(channel):
    health = health_pb2_grpc.HealthStub(channel)
    answer = await health.Check(health_pb2.HealthCheckRequest())
    assert health_pb2.HealthCheckResponse.SERVING == answer.status
