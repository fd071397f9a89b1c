"""The dead-letter read model: what any service (the gateway's admin API, the console, the CLI) may read of
the ops service's dead letters and audit log, through the read-only views ``read_api.dead_letters`` and
``read_api.dlq_audit``. Replays and purges are the ops service's: they go to it as ``DlqAction`` commands."""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import Any

from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncConnection

from shared import queue_depths, topology


def dlq_services() -> list[str]:
    return sorted(set(topology.DLQ_SERVICES) | set(topology.SERVICE_QUEUES))


# --- queries ------------------------------------------------------------------------------------------


async def queue_stats(conn: AsyncConnection) -> dict[str, dict[str, Any]]:
    rows = (
        await conn.execute(
            text("""
        SELECT service, count(*) AS depth, min(failed_at) AS oldest,
               extract(epoch FROM now() - min(failed_at)) AS oldest_age
          FROM read_api.dead_letters WHERE status = 'dead' GROUP BY service
    """)
        )
    ).all()
    return {
        r.service: {"depth": r.depth, "oldest_failed_at": r.oldest, "oldest_age_seconds": r.oldest_age} for r in rows
    }


async def groups(conn: AsyncConnection, service: str | None = None) -> list[dict[str, Any]]:
    rows = (
        (
            await conn.execute(
                text("""
        SELECT service, group_key, exception_type, original_queue, routing_key, count(*) AS count,
               min(failed_at) AS first_failed_at, max(failed_at) AS last_failed_at,
               (array_agg(reason ORDER BY id DESC))[1] AS sample_reason
          FROM read_api.dead_letters
         WHERE status = 'dead' AND (CAST(:service AS text) IS NULL OR service = :service)
         GROUP BY service, group_key, exception_type, original_queue, routing_key
         ORDER BY count(*) DESC, min(failed_at)
    """),
                {"service": service},
            )
        )
        .mappings()
        .all()
    )
    return [dict(r) for r in rows]


async def messages(
    conn: AsyncConnection, service: str | None = None, group: str | None = None, status: str = "dead", limit: int = 100
) -> list[dict[str, Any]]:
    rows = (
        (
            await conn.execute(
                text("""
        SELECT id, service, message_id, original_queue, routing_key, exception_type, group_key, attempts,
               replay_count, left(reason, 300) AS reason, failed_at, status
          FROM read_api.dead_letters
         WHERE (CAST(:service AS text) IS NULL OR service = :service)
           AND (CAST(:grp AS text) IS NULL OR group_key = :grp) AND status = :status
         ORDER BY id LIMIT :limit
    """),
                {"service": service, "grp": group, "status": status, "limit": limit},
            )
        )
        .mappings()
        .all()
    )
    return [dict(r) for r in rows]


async def get(conn: AsyncConnection, dead_letter_id: int) -> dict[str, Any] | None:
    row = (
        (await conn.execute(text("SELECT * FROM read_api.dead_letters WHERE id = :id"), {"id": dead_letter_id}))
        .mappings()
        .first()
    )
    if row is None:
        return None
    out = dict(row)
    body = bytes(out.pop("body"))
    try:
        out["body"] = json.loads(body)
    except ValueError:
        out["body_text"] = body.decode(errors="replace")
    out["death_history"] = out["headers"].get("x-death") or []
    # Every death of this message (a replayed message that failed again is a new row with the same id).
    history = (
        (
            await conn.execute(
                text("""
        SELECT id, status, reason, exception_type, attempts, replay_count, failed_at, resolved_at, resolved_by
          FROM read_api.dead_letters WHERE message_id = :mid AND message_id <> '' ORDER BY id
    """),
                {"mid": out["message_id"]},
            )
        )
        .mappings()
        .all()
    )
    out["history"] = [dict(h) for h in history]
    return out


async def audit_log(conn: AsyncConnection, limit: int = 50) -> list[dict[str, Any]]:
    rows = (
        (await conn.execute(text("SELECT * FROM read_api.dlq_audit ORDER BY id DESC LIMIT :n"), {"n": limit}))
        .mappings()
        .all()
    )
    return [dict(r) for r in rows]


@dataclass(frozen=True)
class Selector:
    """Exactly one of: some ids, a group, or everything waiting in the service's DLQ."""

    ids: tuple[int, ...] = ()
    group: str | None = None
    everything: bool = False

    def __post_init__(self) -> None:
        if sum([bool(self.ids), self.group is not None, self.everything]) != 1:
            raise ValueError("select exactly one of: ids, a group, or all")

    def as_json(self) -> str:
        return json.dumps({"ids": list(self.ids), "group": self.group, "all": self.everything})

    def where(self) -> tuple[str, dict[str, Any]]:
        if self.ids:
            return "id = ANY(:ids)", {"ids": list(self.ids)}
        if self.group is not None:
            return "group_key = :grp", {"grp": self.group}
        return "TRUE", {}


async def broker_depths(
    channel_factory: Callable[[], Awaitable[Any]], names: topology.Names, services: Sequence[str]
) -> dict[str, int | None]:
    """Messages still in each DLQ, not yet moved by the keeper (None: the queue does not exist)."""
    found = await queue_depths.depths(channel_factory, [names.dlq(s) for s in services])
    return {service: found[names.dlq(service)] for service in services}


async def overview(conn: AsyncConnection, depths: dict[str, int | None], names: topology.Names) -> list[dict[str, Any]]:
    stats = await queue_stats(conn)
    out = []
    for service in dlq_services():
        s = stats.get(service, {})
        out.append(
            {
                "service": service,
                "queue": names.dlq(service),
                "depth": int(s.get("depth", 0)),
                "in_broker": depths.get(service),
                "oldest_failed_at": s.get("oldest_failed_at"),
                "oldest_age_seconds": float(s["oldest_age_seconds"])
                if s.get("oldest_age_seconds") is not None
                else None,
            }
        )
    return out
