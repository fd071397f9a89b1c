"""Console pages for background jobs: the list, one job, and its progress fragment (htmx polls it every 500 ms
until the job is DONE or FAILED). Read from ``read_api.ops_jobs`` through shared/ops_jobs.py."""

from __future__ import annotations

import uuid
from typing import Annotated

from fastapi import APIRouter, Path, Request, Response

from services.gateway import jobs_api
from services.gateway.console.rendering import render
from services.gateway.console.session import ConsoleAdmin
from shared import ops_jobs
from shared.messages import JobStatus

router = APIRouter()
JobId = Annotated[uuid.UUID, Path()]


def _finished(job: dict[str, object] | None) -> bool:
    return job is not None and JobStatus(str(job["status"])) in ops_jobs.FINISHED


@router.get("/jobs")
async def jobs(request: Request, user: ConsoleAdmin) -> Response:
    async with request.app.state.engine.connect() as conn:
        recent = await ops_jobs.recent(conn, 100)
    return render(request, "jobs.html", jobs=recent)


@router.get("/jobs/{job_id}")
async def job(request: Request, user: ConsoleAdmin, job_id: JobId) -> Response:
    found = await jobs_api.read_job(request.app.state, job_id)
    return render(request, "job.html", job_id=job_id, job=found, finished=_finished(found))


@router.get("/jobs/{job_id}/progress")
async def progress(request: Request, user: ConsoleAdmin, job_id: JobId) -> Response:
    found = await jobs_api.read_job(request.app.state, job_id)
    return render(request, "_job.html", job_id=job_id, job=found, finished=_finished(found))
