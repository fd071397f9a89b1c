"""Console pages for dead letters: queues, groups, one letter, dry run, replay as a job, purge, the audit log.
Reads go through the dead-letter read model (shared/dead_letters.py); actions through the same functions as the
JSON admin API (services/gateway/ops_api.py, jobs_api.py), so the ops service does every write."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Path, Query, Request, Response
from fastapi.responses import RedirectResponse

from services.gateway import jobs_api, ops_api
from services.gateway.console.rendering import is_htmx, problem_fragment, render
from services.gateway.console.session import ConsoleAdmin, ConsoleForm
from services.gateway.problems import Problem
from shared import dead_letters
from shared.messages import DlqAction, DlqActionKind

router = APIRouter()
ServiceName = Annotated[str, Path(max_length=64, pattern=r"^[a-z][a-z0-9_-]*$")]
GROUP_PATTERN = r"^[^\x00-\x1f\x7f]*$"
MAX_IDS = 10_000


def _selection(form: dict[str, str]) -> tuple[list[int], str | None, bool]:
    """ids (comma separated), a group, or all, from a panel's form; Problem 422 if not exactly one."""
    try:
        ids = [int(x) for x in form.get("ids", "").replace(" ", "").split(",") if x]
    except ValueError:
        raise Problem(422, "Invalid selection", "ids must be numbers", "invalid-request") from None
    group = form.get("group") or None
    everything = form.get("all", "") in ("1", "true", "on")
    if len(ids) > MAX_IDS or any(not 1 <= i <= ops_api.BIGINT for i in ids) or (group and len(group) > 64):
        raise Problem(422, "Invalid selection", "too many or invalid ids, or a group key too long", "invalid-request")
    if sum([bool(ids), group is not None, everything]) != 1:
        raise Problem(422, "Invalid selection", "select exactly one of: ids, a group, or all", "invalid-request")
    return ids, group, everything


def _rate(form: dict[str, str]) -> float | None:
    raw = form.get("rate", "").strip()
    if not raw:
        return None
    try:
        rate = float(raw)
    except ValueError:
        raise Problem(422, "Invalid rate", "the rate is a number of messages per second", "invalid-request") from None
    if not 0 < rate <= 10_000:
        raise Problem(422, "Invalid rate", "the rate is between 0 and 10,000 per second", "invalid-request")
    return rate


@router.get("/dlq")
async def queues(request: Request, user: ConsoleAdmin) -> Response:
    return render(request, "queues.html", queues=await ops_api.queue_overview(request.app.state))


@router.get("/audit")
async def audit(request: Request, user: ConsoleAdmin, limit: int = Query(100, ge=1, le=1000)) -> Response:
    async with request.app.state.engine.connect() as conn:
        entries = await dead_letters.audit_log(conn, limit)
    return render(request, "audit.html", entries=entries)


@router.get("/dlq/messages/{dead_letter_id}")
async def message(
    request: Request, user: ConsoleAdmin, dead_letter_id: Annotated[int, Path(ge=1, le=ops_api.BIGINT)]
) -> Response:
    async with request.app.state.engine.connect() as conn:
        row = await dead_letters.get(conn, dead_letter_id)
    if row is None:
        return render(
            request, "_message.html", 404, kind="error", title="Not found", text=f"no dead letter {dead_letter_id}"
        )
    return render(request, "message.html", m=row, queue=request.app.state.names.dlq(row["service"]))


@router.get("/dlq/{service}")
async def service_page(
    request: Request,
    user: ConsoleAdmin,
    service: ServiceName,
    group: Annotated[str | None, Query(max_length=64, pattern=GROUP_PATTERN)] = None,
) -> Response:
    try:
        ops_api.known_service(service)
    except Problem as problem:
        return problem_fragment(request, problem)
    async with request.app.state.engine.connect() as conn:
        groups = await dead_letters.groups(conn, service)
        messages = await dead_letters.messages(conn, service, group, "dead", 200)
    return render(
        request,
        "service.html",
        service=service,
        queue=request.app.state.names.dlq(service),
        group=group,
        groups=groups,
        messages=messages,
    )


@router.post("/dlq/{service}/preview")
async def preview(request: Request, user: ConsoleAdmin, form: ConsoleForm, service: ServiceName) -> Response:
    """A dry run: counted and audited by the ops service, nothing changed."""
    try:
        ids, group, everything = _selection(form)
        answered = await ops_api.send_dlq_action(
            request.app.state,
            DlqAction(
                action=DlqActionKind.REPLAY,
                service=ops_api.known_service(service),
                ids=ids,
                group=group,
                everything=everything,
                dry_run=True,
                actor=f"user:{user.id}",
            ),
        )
    except Problem as problem:
        return problem_fragment(request, problem)
    if answered is None:
        return render(
            request,
            "_message.html",
            504,
            kind="error",
            title="No answer",
            text="the ops service did not answer the dry run in time",
        )
    return render(request, "_preview.html", result=answered.result)


@router.post("/dlq/{service}/replay")
async def replay(request: Request, user: ConsoleAdmin, form: ConsoleForm, service: ServiceName) -> Response:
    """Replay as a background job of the ops service; answers with the job's progress, which polls itself."""
    try:
        ids, group, everything = _selection(form)
        job_id, _ = await jobs_api.submit_replay(request.app.state, user, service, ids, group, everything, _rate(form))
    except Problem as problem:
        return problem_fragment(request, problem)
    if not is_htmx(request):
        return RedirectResponse(f"/ops/jobs/{job_id}", status_code=303)
    job = await jobs_api.read_job(request.app.state, job_id)
    return render(request, "_job.html", job_id=job_id, job=job, finished=False)


@router.post("/dlq/{service}/purge")
async def purge(request: Request, user: ConsoleAdmin, form: ConsoleForm, service: ServiceName) -> Response:
    """Purge needs the queue's name typed: purged letters can never be replayed."""
    try:
        ops_api.known_service(service)
        queue = request.app.state.names.dlq(service)
        if form.get("confirm", "").strip() != queue:
            raise Problem(
                422, "Confirmation required", f"type the queue name {queue} to purge", "confirmation-required"
            )
        ids, group, everything = _selection(form)
        answered = await ops_api.send_dlq_action(
            request.app.state,
            DlqAction(
                action=DlqActionKind.PURGE,
                service=service,
                ids=ids,
                group=group,
                everything=everything,
                actor=f"user:{user.id}",
            ),
        )
    except Problem as problem:
        return problem_fragment(request, problem)
    if answered is None:
        text = "the ops service has not answered yet; the audit log will show the purge"
        return render(request, "_message.html", 202, kind="info", title="Under way", text=text)
    result = answered.result
    affected, matched = result.get("affected", 0), result.get("matched", 0)
    text = f"{affected} of {matched} dead letters purged (audit #{result.get('audit_id')})"
    return render(request, "_message.html", kind="info", title="Purged", text=text)
