"""Request ids, the keys that make a retried call change nothing: given, or from a job id."""

from __future__ import annotations

import re
import uuid

ID_RE = re.compile(r"[A-Za-z0-9._:-]{1,128}")
# Request ids derived from job ids live in their own uuid5 namespace, so the same job id
# always gives the same request id, on every worker and after every restart.
JOB_NAMESPACE = uuid.UUID("6f1d3c52-8e0b-5a4f-9f43-0d2b7c9e6a11")


def request_id_for(job_id: str) -> str:
    """The request id of a job: the same job id always gives the same request id.

    A job id that is already a valid id becomes ``job:<id>`` (readable in the journal);
    any other (too long, other characters) becomes ``job:<uuid5 of it>``.
    """
    if not job_id:
        raise ValueError("job_id must not be empty")
    if ID_RE.fullmatch(job_id) and len(job_id) <= 124:
        return f"job:{job_id}"
    return f"job:{uuid.uuid5(JOB_NAMESPACE, job_id)}"


def pick_request_id(request_id: str | None, job_id: str | None) -> str:
    if request_id and job_id:
        raise ValueError("give request_id or job_id, not both")
    if request_id:
        return request_id
    if job_id:
        return request_id_for(job_id)
    raise ValueError("a request_id or a job_id is required")
