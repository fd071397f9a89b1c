"""The background-job read model: what the gateway's admin API and console may read of the ops service's jobs,
through the read-only view ``read_api.ops_jobs`` (migration 0010). Jobs are started by a ``StartJob`` command
to the ops service, which alone writes them (``services/ops/jobs.py``)."""

from __future__ import annotations

from typing import Any
from uuid import UUID

from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncConnection

from shared.messages import JobStatus

FINISHED = frozenset({JobStatus.DONE, JobStatus.FAILED})


async def get(conn: AsyncConnection, job_id: UUID) -> dict[str, Any] | None:
    row = (
        (await conn.execute(text("SELECT * FROM read_api.ops_jobs WHERE id = :id"), {"id": job_id})).mappings().first()
    )
    return dict(row) if row else None


async def recent(conn: AsyncConnection, limit: int = 50) -> list[dict[str, Any]]:
    rows = (
        (await conn.execute(text("SELECT * FROM read_api.ops_jobs ORDER BY created_at DESC LIMIT :n"), {"n": limit}))
        .mappings()
        .all()
    )
    return [dict(r) for r in rows]
