"""Admin-only background jobs (/admin/jobs): a long dead-letter replay submitted to the ops service, which runs it
in chunks; its progress (status, done/total) is read from the view ``read_api.ops_jobs`` (shared/ops_jobs.py)."""

from __future__ import annotations

import uuid
from typing import Annotated, Any

from fastapi import APIRouter, Path, Query, Request
from fastapi.responses import JSONResponse
from pydantic import ConfigDict, Field

from services.gateway import commands
from services.gateway.auth import AdminUser, User
from services.gateway.edge import EdgeRoute
from services.gateway.ops_api import Selection, known_service
from services.gateway.problems import Problem
from shared import ops_jobs
from shared.messages import JobAccepted, JobKind, JobOutcome, StartJob

SUBMIT_WAIT_SECONDS = 5.0  # the ops service records a job at once; past this the job shows as not yet recorded
router = APIRouter(prefix="/admin/jobs", tags=["jobs"], route_class=EdgeRoute)


class ReplayJobIn(Selection):
    """A replay to run in the background (a dry run is not a job: POST /admin/dlq/{service}/replay)."""

    model_config = ConfigDict(extra="forbid")
    service: Annotated[str, Field(max_length=64, pattern=r"^[a-z][a-z0-9_-]*$")]
    rate: float | None = Field(None, gt=0, le=10_000, description="Messages per second (default: setting)")


async def submit_replay(
    state: Any,
    user: User,
    service: str,
    ids: list[int],
    group: str | None,
    everything: bool,
    rate: float | None = None,
) -> tuple[uuid.UUID, JobAccepted | None]:
    """Send a replay job to the ops service; the job's id, and its answer (None: not answered yet, the command
    is durable and the job will appear). Raises a problem when it cannot be sent or is refused."""
    cmd = StartJob(
        job_id=uuid.uuid4(),
        kind=JobKind.DLQ_REPLAY,
        service=known_service(service),
        ids=ids,
        group=group,
        everything=everything,
        rate=rate,
        actor=f"user:{user.id}",
    )
    answered = await commands.ask(state, cmd, JobAccepted, SUBMIT_WAIT_SECONDS)
    if answered is not None and answered.outcome is JobOutcome.REFUSED:
        raise Problem(422, "Job refused", answered.detail, "job-refused")
    return cmd.job_id, answered


async def read_job(state: Any, job_id: uuid.UUID) -> dict[str, Any] | None:
    async with state.engine.connect() as conn:
        return await ops_jobs.get(conn, job_id)


@router.post("", status_code=202)
async def start(request: Request, user: AdminUser, body: ReplayJobIn) -> JSONResponse:
    """Replay dead letters as a background job of the ops service (ids, a group or all of one service); answers
    202 with the job's id at once. Poll GET /admin/jobs/{id} for status and done/total."""
    job_id, answered = await submit_replay(
        request.app.state, user, body.service, body.ids, body.group, body.all, body.rate
    )
    status = answered.status.value if answered is not None and answered.status else "SUBMITTED"
    return JSONResponse(
        {"job_id": str(job_id), "status": status, "href": f"/admin/jobs/{job_id}"},
        status_code=202,
        headers={"Location": f"/admin/jobs/{job_id}"},
    )


@router.get("")
async def recent(request: Request, user: AdminUser, limit: int = Query(50, ge=1, le=500)) -> list[dict[str, Any]]:
    """The latest jobs, newest first."""
    async with request.app.state.engine.connect() as conn:
        return await ops_jobs.recent(conn, limit)


@router.get("/{job_id}")
async def show(request: Request, user: AdminUser, job_id: Annotated[uuid.UUID, Path()]) -> dict[str, Any]:
    """One job: kind, parameters, status (QUEUED, RUNNING, DONE, FAILED), done/total, affected, times, actor."""
    job = await read_job(request.app.state, job_id)
    if job is None:
        raise Problem(404, "Not found", f"no job {job_id} (yet)", "not-found")
    return job
