"""Admin-only dead-letter operations over HTTP (/admin/dlq): the same operations as `ticketing dlq`."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Path, Query, Request
from fastapi.responses import JSONResponse
from pydantic import BaseModel, Field, model_validator

from services.gateway import commands
from services.gateway.auth import AdminUser
from services.gateway.edge import EdgeRoute
from services.gateway.problems import Problem
from shared import dead_letters
from shared.messages import DlqAction, DlqActionAnswered, DlqActionKind, DlqActionOutcome

ACTION_WAIT_SECONDS = 30.0  # longer replays answer 202 and go on in the ops service
router = APIRouter(prefix="/admin/dlq", tags=["dead letters"], route_class=EdgeRoute)
BIGINT = 2**63 - 1
DeadLetterId = Annotated[int, Field(ge=1, le=BIGINT)]
ServiceName = Annotated[str, Path(max_length=64, pattern=r"^[a-z][a-z0-9_-]*$")]
GroupName = Annotated[str, Field(max_length=64, pattern=r"^[^\x00-\x1f\x7f]*$")]


class Selection(BaseModel):
    """Dead letters of one service: some ids, a group, or all (exactly one)."""

    ids: list[DeadLetterId] = Field(default_factory=list, max_length=10_000)
    group: GroupName | None = None
    all: bool = False

    @model_validator(mode="after")
    def _exactly_one(self) -> Selection:
        if sum([bool(self.ids), self.group is not None, self.all]) != 1:
            raise ValueError("select exactly one of: ids, group, all")
        return self


class SelectionIn(Selection):
    dry_run: bool = False


class ReplayIn(SelectionIn):
    rate: float | None = Field(None, gt=0, le=10_000, description="Messages per second (default: setting)")


class PurgeIn(SelectionIn):
    confirm: str = Field(
        "", max_length=64, description="Must repeat the service name: purging cannot be undone by a replay"
    )


def known_service(service: str) -> str:
    if service not in dead_letters.dlq_services():
        raise Problem(404, "Not found", f"no dead-letter queue for service {service!r}", "not-found")
    return service


async def queue_overview(state: Any) -> list[dict[str, Any]]:
    """Every service's DLQ: dead letters waiting, messages not yet stored, age of the oldest (API and console)."""
    depths = await dead_letters.broker_depths(state.bus.admin_channel, state.names, dead_letters.dlq_services())
    async with state.engine.connect() as conn:
        return await dead_letters.overview(conn, depths, state.names)


@router.get("")
async def list_queues(request: Request, user: AdminUser) -> list[dict[str, Any]]:
    """Every service's DLQ: dead letters waiting, messages not yet stored, age of the oldest."""
    return await queue_overview(request.app.state)


@router.get("/audit")
async def audit(request: Request, user: AdminUser, limit: int = Query(50, ge=1, le=1000)) -> list[dict[str, Any]]:
    async with request.app.state.engine.connect() as conn:
        return await dead_letters.audit_log(conn, limit)


@router.get("/messages/{dead_letter_id}")
async def show(
    request: Request, user: AdminUser, dead_letter_id: Annotated[int, Path(ge=1, le=BIGINT)]
) -> dict[str, Any]:
    async with request.app.state.engine.connect() as conn:
        row = await dead_letters.get(conn, dead_letter_id)
    if row is None:
        raise Problem(404, "Not found", f"no dead letter {dead_letter_id}", "not-found")
    return row


@router.get("/{service}/groups")
async def groups(request: Request, user: AdminUser, service: ServiceName) -> list[dict[str, Any]]:
    async with request.app.state.engine.connect() as conn:
        return await dead_letters.groups(conn, known_service(service))


@router.get("/{service}/messages")
async def messages(
    request: Request,
    user: AdminUser,
    service: ServiceName,
    group: Annotated[str | None, Query(max_length=64, pattern=r"^[^\x00-\x1f\x7f]*$")] = None,
    status: str = Query("dead", pattern="^(dead|replayed|purged)$"),
    limit: int = Query(100, ge=1, le=1000),
) -> list[dict[str, Any]]:
    async with request.app.state.engine.connect() as conn:
        return await dead_letters.messages(conn, known_service(service), group, status, limit)


async def send_dlq_action(state: Any, cmd: DlqAction) -> DlqActionAnswered | None:
    """Hand the action to the ops service, which owns the dead letters, and wait a bounded time (None: no answer
    yet; the command is durable). Refusals are raised as problems (API and console)."""
    answered = await commands.ask(state, cmd, DlqActionAnswered, ACTION_WAIT_SECONDS)
    if answered is None:
        return None
    match answered.outcome:
        case DlqActionOutcome.UNKNOWN_SERVICE:
            raise Problem(404, "Not found", answered.detail, "not-found")
        case DlqActionOutcome.BUSY:
            raise Problem(409, "Replay in progress", answered.detail, "replay-in-progress")
        case DlqActionOutcome.INTERRUPTED:
            raise Problem(
                502,
                "Replay interrupted",
                answered.detail,
                "replay-interrupted",
                replayed=answered.result.get("affected"),
                audit_id=answered.result.get("audit_id"),
            )
    return answered


async def _dlq_action(request: Request, cmd: DlqAction) -> Any:
    answered = await send_dlq_action(request.app.state, cmd)
    if answered is None:  # durable and under way: its progress and result show in the audit log
        return JSONResponse(
            {
                "status": "running",
                "detail": f"the {cmd.action.value} goes on in the ops service; GET /admin/dlq/audit shows its result",
            },
            status_code=202,
        )
    return answered.result


@router.post("/{service}/replay")
async def replay(request: Request, user: AdminUser, service: ServiceName, body: ReplayIn) -> Any:
    """Republish to the original queues with confirms, rate-limited; dry_run only counts. Audited. Done by
    the ops service; 202 when it takes longer than the wait (the audit log shows the result)."""
    return await _dlq_action(
        request,
        DlqAction(
            action=DlqActionKind.REPLAY,
            service=known_service(service),
            ids=body.ids,
            group=body.group,
            everything=body.all,
            dry_run=body.dry_run,
            rate=body.rate,
            actor=f"user:{user.id}",
        ),
    )


@router.post("/{service}/purge")
async def purge(request: Request, user: AdminUser, service: ServiceName, body: PurgeIn) -> Any:
    """Mark dead letters purged (kept as evidence, never replayed); needs ``confirm`` = the service name."""
    known_service(service)
    if not body.dry_run and body.confirm != service:
        raise Problem(422, "Confirmation required", f"set confirm to {service!r} to purge", "confirmation-required")
    return await _dlq_action(
        request,
        DlqAction(
            action=DlqActionKind.PURGE,
            service=service,
            ids=body.ids,
            group=body.group,
            everything=body.all,
            dry_run=body.dry_run,
            actor=f"user:{user.id}",
        ),
    )
