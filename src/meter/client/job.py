"""The handle a job gets from `client.job(...)`: its hold, and where it puts its actual cost."""

from __future__ import annotations

from dataclasses import dataclass, field

from meter.client import requests
from meterpb.v1 import meter_pb2 as pb


@dataclass(slots=True)
class JobState:
    """What the job context manager knows about one job.

    Set `actual` (credits) or `usage` (the actual usage, priced with the hold's catalog
    version) before the block ends; with neither, the commit charges what was reserved for
    (the reserve's usage, or its explicit amount).

    Attributes:
        workspace: the workspace charged.
        request_id: the job's request id (derived from its job id when one was given).
        hold: the hold, as Reserve (and the latest Extend) returned it.
        actual: the actual cost in credits, set by the job.
        usage: the actual usage, set by the job.
        labels: labels for the commit.
        result: the Commit's answer once the block succeeded.
    """

    workspace: str
    request_id: str
    hold: pb.Hold
    reserved_usage: pb.Usage | None = None
    actual: int | None = None
    usage: pb.Usage | None = None
    labels: dict[str, str] = field(default_factory=dict)
    result: pb.CommitResponse | None = None

    def commit_request(self) -> pb.CommitRequest:
        amount, usage = self.actual, self.usage
        if amount is None and usage is None:
            if self.reserved_usage is not None:
                usage = self.reserved_usage
            else:
                amount = self.hold.amount
        return requests.commit(
            self.workspace, self.request_id, usage=usage, amount=amount, labels=self.labels
        )
