"""A token limited to workspaces touches only those, and learns nothing of the others."""

from __future__ import annotations

import contextlib

import grpc

from meterpb.v1 import catalog_pb2 as cpb
from meterpb.v1 import catalog_pb2_grpc, meter_pb2_grpc
from meterpb.v1 import meter_pb2 as pb
from tests.security.conftest import Mint, bearer
from tests.support import Db, fails, grant, rid


def ws_id(ws: str, n: int) -> str:
    return f"{ws}-{n}"


async def test_a_scoped_token_is_refused_alike_for_workspaces_that_exist_and_that_do_not(
    mint: Mint, secure_channel, admin_token, ws
):
    mine, other, missing = ws_id(ws, 1), ws_id(ws, 2), ws_id(ws, 3)
    stub = meter_pb2_grpc.MeterStub(secure_channel)
    for w in (mine, other):
        await stub.GrantCredits(
            pb.GrantCreditsRequest(workspace_id=w, request_id=rid(), amount=10),
            metadata=bearer(admin_token),
        )
    token = await mint("worker", workspaces=[mine])
    md = bearer(token)
    assert (
        10
        == (await stub.GetBalance(pb.GetBalanceRequest(workspace_id=mine), metadata=md)).available
    )
    answers = []
    for w in (other, missing):
        f = await fails(stub.GetBalance(pb.GetBalanceRequest(workspace_id=w), metadata=md))
        answers.append((f.code, f.reason, f.message, f.metadata))
        f = await fails(
            stub.Charge(pb.ChargeRequest(workspace_id=w, request_id=rid(), amount=1), metadata=md)
        )
        assert grpc.StatusCode.PERMISSION_DENIED == f.code
    assert answers[0] == answers[1]
    assert (grpc.StatusCode.PERMISSION_DENIED, "WORKSPACE_NOT_ALLOWED") == answers[0][:2]
    assert other not in answers[0][2]


async def test_audit_of_every_workspace_needs_an_unscoped_admin(
    mint: Mint, secure_channel, admin_token, ws
):
    stub = meter_pb2_grpc.MeterStub(secure_channel)
    scoped = bearer(await mint("admin", workspaces=[ws]))
    await grant(_Authed(stub, admin_token), ws, 5)
    assert (
        1
        == (await stub.Audit(pb.AuditRequest(workspace_id=ws), metadata=scoped)).workspaces_checked
    )
    f = await fails(stub.Audit(pb.AuditRequest(), metadata=scoped))
    assert (grpc.StatusCode.PERMISSION_DENIED, "WORKSPACE_NOT_ALLOWED") == (f.code, f.reason)
    answer = await stub.Audit(pb.AuditRequest(), metadata=bearer(admin_token), timeout=30)
    assert answer.workspaces_checked >= 1


async def test_the_journal_export_of_every_workspace_is_refused_to_a_scoped_token(
    mint: Mint, secure_channel, ws
):
    """ExportJournal answers every workspace's entries: a token limited to some is refused
    outright (as for the whole event feed), rather than answered a filtered feed."""
    stub = meter_pb2_grpc.MeterStub(secure_channel)
    for role in ("app", "billing", "admin"):
        scoped = bearer(await mint(role, workspaces=[ws]))
        f = await fails(stub.ExportJournal(pb.ExportJournalRequest(page_size=1), metadata=scoped))
        assert (grpc.StatusCode.PERMISSION_DENIED, "WORKSPACE_NOT_ALLOWED") == (f.code, f.reason)
    unscoped = bearer(await mint("billing"))
    answer = await stub.ExportJournal(pb.ExportJournalRequest(page_size=1), metadata=unscoped)
    assert answer.next_page_token


async def test_a_scoped_admin_cannot_publish_the_catalog_every_workspace_uses(
    mint: Mint, secure_channel, ws
):
    cat = catalog_pb2_grpc.CatalogStub(secure_channel)
    scoped = bearer(await mint("admin", workspaces=[ws]))
    f = await fails(cat.PublishCatalog(cpb.PublishCatalogRequest(document="x"), metadata=scoped))
    assert (grpc.StatusCode.PERMISSION_DENIED, "WORKSPACE_NOT_ALLOWED") == (f.code, f.reason)


async def test_estimates_for_a_workspace_need_it_in_scope_and_without_one_do_not(
    mint: Mint, secure_channel, admin_token, ws
):
    cat = catalog_pb2_grpc.CatalogStub(secure_channel)
    await grant(_Authed(meter_pb2_grpc.MeterStub(secure_channel), admin_token), ws, 5)
    md = bearer(await mint("planner", workspaces=[ws]))
    plan = {"platforms": 1, "duration_days": 7}
    await cat.EstimateCampaign(cpb.EstimateCampaignRequest(**plan), metadata=md)
    await cat.EstimateCampaign(cpb.EstimateCampaignRequest(workspace_id=ws, **plan), metadata=md)
    f = await fails(
        cat.EstimateCampaign(
            cpb.EstimateCampaignRequest(workspace_id=ws_id(ws, 9), **plan), metadata=md
        )
    )
    assert grpc.StatusCode.PERMISSION_DENIED == f.code


async def test_a_stream_delivers_what_came_before_an_item_out_of_scope_then_ends_denied(
    mint: Mint, secure_channel, admin_token, ws, db: Db
):
    """The message with the foreign item is not applied at all (not even its in-scope items);
    earlier messages are answered; then the stream ends with PERMISSION_DENIED."""
    other = ws_id(ws, 2)
    stub = meter_pb2_grpc.MeterStub(secure_channel)
    for w in (ws, other):
        await grant(_Authed(stub, admin_token), w, 100)
    before = db.snapshot(other)
    md = bearer(await mint("worker", workspaces=[ws]))
    stream = stub.Stream(metadata=md, timeout=10)

    def charge(w: str, r: str) -> pb.StreamItem:
        return pb.StreamItem(charge=pb.ChargeRequest(workspace_id=w, request_id=r, amount=1))

    await stream.write(pb.StreamRequest(items=[charge(ws, "first")]))
    first = await stream.read()
    assert ["first"] == [r.request_id for r in first.results]
    assert 0 == first.results[0].status.code
    await stream.write(pb.StreamRequest(items=[charge(ws, "same-message"), charge(other, "x")]))
    late = []
    with contextlib.suppress(grpc.aio.AioRpcError):
        while (message := await stream.read()) is not grpc.aio.EOF:
            late.append(message)
    assert [] == late
    assert grpc.StatusCode.PERMISSION_DENIED == await stream.code()
    assert before == db.snapshot(other)
    b = await stub.GetBalance(pb.GetBalanceRequest(workspace_id=ws), metadata=md)
    assert 99 == b.available


class _Authed:
    """A stub whose calls carry a token (for helpers that take a stub)."""

    def __init__(self, stub: meter_pb2_grpc.MeterStub, token: str) -> None:
        self.stub, self.md = stub, bearer(token)

    def __getattr__(self, name: str) -> object:
        method = getattr(self.stub, name)
        return lambda request, **kw: method(request, metadata=self.md, **kw)
