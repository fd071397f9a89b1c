"""Admin-only dead-letter operations over HTTP (/admin/dlq): the same operations as `ticketing dlq`."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Path, Query, Request
from pydantic import BaseModel, Field, model_validator

from services.gateway.auth import AdminUser
from services.gateway.edge import EdgeRoute
from services.gateway.problems import Problem
from services.ops import dlq

router = APIRouter(prefix="/admin/dlq", tags=["dead letters"], route_class=EdgeRoute)
BIGINT = 2**63 - 1
DeadLetterId = Annotated[int, Field(ge=1, le=BIGINT)]
ServiceName = Annotated[str, Path(max_length=64, pattern=r"^[a-z][a-z0-9_-]*$")]
GroupName = Annotated[str, Field(max_length=64, pattern=r"^[^\x00-\x1f\x7f]*$")]


class SelectionIn(BaseModel):
    ids: list[DeadLetterId] = Field(default_factory=list, max_length=10_000)
    group: GroupName | None = None
    all: bool = False
    dry_run: bool = False

    @model_validator(mode="after")
    def _exactly_one(self) -> SelectionIn:
        if sum([bool(self.ids), self.group is not None, self.all]) != 1:
            raise ValueError("select exactly one of: ids, group, all")
        return self

    def selector(self) -> dlq.Selector:
        return dlq.Selector(ids=tuple(self.ids), group=self.group, everything=self.all)


class ReplayIn(SelectionIn):
    rate: float | None = Field(None, gt=0, le=10_000, description="Messages per second (default: setting)")


class PurgeIn(SelectionIn):
    confirm: str = Field(
        "", max_length=64, description="Must repeat the service name: purging cannot be undone by a replay"
    )


def _service(service: str) -> str:
    if service not in dlq.dlq_services():
        raise Problem(404, "Not found", f"no dead-letter queue for service {service!r}", "not-found")
    return service


@router.get("")
async def list_queues(request: Request, user: AdminUser) -> list[dict[str, Any]]:
    """Every service's DLQ: dead letters waiting, messages not yet stored, age of the oldest."""
    state = request.app.state
    depths = await dlq.broker_depths(state.bus.admin_channel, state.names, dlq.dlq_services())
    async with state.engine.connect() as conn:
        return await dlq.overview(conn, depths, state.names)


@router.get("/audit")
async def audit(request: Request, user: AdminUser, limit: int = Query(50, ge=1, le=1000)) -> list[dict[str, Any]]:
    async with request.app.state.engine.connect() as conn:
        return await dlq.audit_log(conn, limit)


@router.get("/messages/{dead_letter_id}")
async def show(request: Request, user: AdminUser,
               dead_letter_id: Annotated[int, Path(ge=1, le=BIGINT)]) -> dict[str, Any]:
    async with request.app.state.engine.connect() as conn:
        row = await dlq.get(conn, dead_letter_id)
    if row is None:
        raise Problem(404, "Not found", f"no dead letter {dead_letter_id}", "not-found")
    return row


@router.get("/{service}/groups")
async def groups(request: Request, user: AdminUser, service: ServiceName) -> list[dict[str, Any]]:
    async with request.app.state.engine.connect() as conn:
        return await dlq.groups(conn, _service(service))


@router.get("/{service}/messages")
async def messages(
    request: Request, user: AdminUser, service: ServiceName,
    group: Annotated[str | None, Query(max_length=64, pattern=r"^[^\x00-\x1f\x7f]*$")] = None,
    status: str = Query("dead", pattern="^(dead|replayed|purged)$"), limit: int = Query(100, ge=1, le=1000),
) -> list[dict[str, Any]]:
    async with request.app.state.engine.connect() as conn:
        return await dlq.messages(conn, _service(service), group, status, limit)


@router.post("/{service}/replay")
async def replay(request: Request, user: AdminUser, service: ServiceName, body: ReplayIn) -> dict[str, Any]:
    """Republish to the original queues with confirms, rate-limited; dry_run only counts. Audited."""
    state = request.app.state
    bus = state.bus

    async def publish(data: bytes, queue: str, message_id: str, headers: dict[str, Any],
                      correlation_id: str | None) -> None:
        await bus.publish_raw(data, queue, exchange="", message_id=message_id, headers=headers,
                              correlation_id=correlation_id)

    rate = body.rate if body.rate is not None else state.settings.dlq_replay_rate
    try:
        result = await dlq.replay(state.engine, publish, _service(service), body.selector(), f"user:{user.id}",
                                  dry_run=body.dry_run, rate=rate)
    except dlq.ReplayInProgress as exc:
        raise Problem(409, "Replay in progress", str(exc), "replay-in-progress") from exc
    if result.error:
        raise Problem(502, "Replay interrupted", result.error, "replay-interrupted", replayed=result.affected,
                      audit_id=result.audit_id)
    return result.__dict__


@router.post("/{service}/purge")
async def purge(request: Request, user: AdminUser, service: ServiceName, body: PurgeIn) -> dict[str, Any]:
    _service(service)
    if not body.dry_run and body.confirm != service:
        raise Problem(422, "Confirmation required", f"set confirm to {service!r} to purge", "confirmation-required")
    result = await dlq.purge(request.app.state.engine, service, body.selector(), f"user:{user.id}",
                             dry_run=body.dry_run)
    return result.__dict__
