"""Test helpers: error details, direct SQL snapshots, unique ids."""

from __future__ import annotations

import asyncio
import uuid
from dataclasses import dataclass
from typing import Any

import grpc
import sqlalchemy as sa
from google.rpc import error_details_pb2
from grpc_status import rpc_status

from meter.storage.db import sync_engine
from meterpb.v1 import meter_pb2 as pb


def rid(prefix: str = "job") -> str:
    return f"{prefix}-{uuid.uuid4().hex[:12]}"


@dataclass
class Failure:
    code: grpc.StatusCode
    message: str
    reason: str
    metadata: dict[str, str]
    fields: list[str]
    retry_delay: float | None


def failure(err: grpc.aio.AioRpcError | grpc.RpcError) -> Failure:
    """The status, ErrorInfo, BadRequest and RetryInfo of a failed call."""
    status = rpc_status.from_call(err)  # type: ignore[arg-type]
    reason, metadata, fields, delay = "", {}, [], None
    if status is not None:
        for d in status.details:
            if d.Is(error_details_pb2.ErrorInfo.DESCRIPTOR):
                info = error_details_pb2.ErrorInfo()
                d.Unpack(info)
                assert info.domain == "meter"
                reason, metadata = info.reason, dict(info.metadata)
            elif d.Is(error_details_pb2.BadRequest.DESCRIPTOR):
                br = error_details_pb2.BadRequest()
                d.Unpack(br)
                fields = [v.field for v in br.field_violations]
            elif d.Is(error_details_pb2.RetryInfo.DESCRIPTOR):
                ri = error_details_pb2.RetryInfo()
                d.Unpack(ri)
                delay = ri.retry_delay.seconds + ri.retry_delay.nanos / 1e9
    return Failure(err.code(), err.details() or "", reason, metadata, fields, delay)


async def fails(call: Any) -> Failure:
    """Await a call that must fail; return its failure."""
    try:
        await call
    except grpc.aio.AioRpcError as e:
        return failure(e)
    raise AssertionError("the call succeeded")


class Db:
    """Direct reads of the tables, for what the API does not show."""

    TABLES = (
        "workspaces",
        "lots",
        "holds",
        "journal",
        "alerts",
        "budgets",
        "budget_spend",
        "auto_topups",
    )

    def __init__(self, url: str) -> None:
        self.engine = sync_engine(url, pool_size=2)

    def close(self) -> None:
        self.engine.dispose()

    def rows(self, sql: str, **params: Any) -> list[Any]:
        with self.engine.connect() as conn:
            return list(conn.execute(sa.text(sql), params).all())

    def scalar(self, sql: str, **params: Any) -> Any:
        with self.engine.connect() as conn:
            return conn.execute(sa.text(sql), params).scalar()

    def execute(self, sql: str, **params: Any) -> None:
        with self.engine.begin() as conn:
            conn.execute(sa.text(sql), params)

    def snapshot(self, workspace_id: str) -> dict[str, list[tuple[Any, ...]]]:
        """Every stored row of a workspace, to prove a refused call changed nothing."""
        out = {}
        for t in self.TABLES:
            rows = self.rows(
                f"SELECT * FROM {t} WHERE workspace_id = :w ORDER BY 1, 2", w=workspace_id
            )
            out[t] = [tuple(r) for r in rows]
        return out


async def grant(stub: Any, workspace_id: str, amount: int, **kw: Any) -> pb.GrantCreditsResponse:
    return await stub.GrantCredits(
        pb.GrantCreditsRequest(
            workspace_id=workspace_id, request_id=rid("grant"), amount=amount, **kw
        )
    )


async def reserve(stub: Any, workspace_id: str, request_id: str, amount: int, **kw: Any) -> pb.Hold:
    resp = await stub.Reserve(
        pb.ReserveRequest(workspace_id=workspace_id, request_id=request_id, amount=amount, **kw)
    )
    return resp.hold


async def balance(stub: Any, workspace_id: str) -> pb.Balance:
    return await stub.GetBalance(pb.GetBalanceRequest(workspace_id=workspace_id))


async def eventually(check: Any, within: float = 10.0, interval: float = 0.05) -> Any:
    """Poll an async condition until it returns something truthy; fail after `within` seconds.

    The condition lives on the other side of the wire, so polling it is the way to wait.
    """
    loop = asyncio.get_running_loop()
    deadline = loop.time() + within
    while True:
        value = await check()
        if value:
            return value
        if loop.time() > deadline:
            raise AssertionError(f"condition not met within {within}s (last: {value!r})")
        await asyncio.sleep(interval)
