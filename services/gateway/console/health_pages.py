"""The console's live health view: every service's /readyz (the gateway's own checks in process, the others
on the health ports the settings name), the broker's queue depths, and holds expiring within a minute."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime
from typing import Any

import httpx
from fastapi import APIRouter, Request, Response

from services.gateway.console.rendering import render
from services.gateway.console.session import ConsoleAdmin
from shared import health, queue_depths, read_api

router = APIRouter()
EXPIRING_WITHIN_SECONDS = 60.0
READYZ_TIMEOUT_SECONDS = 3.0


async def _remote(client: httpx.AsyncClient, name: str, host: str, port: int) -> dict[str, Any]:
    where = f"{host}:{port}"
    if not port:
        return {"name": name, "where": "-", "ready": False, "detail": "no health port configured"}
    try:
        r = await client.get(f"http://{where}/readyz")
    except httpx.HTTPError as exc:
        return {"name": name, "where": where, "ready": False, "detail": f"unreachable: {type(exc).__name__}"}
    try:
        body = r.json()
    except ValueError:
        body = {}
    detail = "; ".join(f"{k}: {v}" for k, v in (body.get("failures") or {}).items())
    warnings = "; ".join(body.get("warnings") or [])
    return {
        "name": name,
        "where": where,
        "ready": r.status_code == 200,
        "detail": "; ".join(x for x in (detail, warnings) if x) or body.get("status", str(r.status_code)),
    }


async def services(state: Any) -> list[dict[str, Any]]:
    settings = state.settings
    failures = await health.run_checks(state.readiness_checks)
    own = {
        "name": "gateway",
        "where": f"{settings.gateway_host}:{settings.gateway_port}",
        "ready": not failures,
        "detail": "; ".join(f"{k}: {v}" for k, v in failures.items()) or "ready",
    }
    async with httpx.AsyncClient(timeout=READYZ_TIMEOUT_SECONDS) as client:
        others = await asyncio.gather(
            *(
                _remote(client, name, settings.service_host, port)
                for name, port in health.service_ports(settings).items()
            )
        )
    return [own, *others]


@router.get("/health")
async def page(request: Request, user: ConsoleAdmin) -> Response:
    return render(request, "health.html")


@router.get("/health/live")
async def live(request: Request, user: ConsoleAdmin) -> Response:
    state = request.app.state
    broker_error = ""
    names = queue_depths.work_queue_names(state.names)
    try:
        depths = await queue_depths.depths(state.bus.admin_channel, names)
    except Exception as exc:  # not connected to the broker
        depths, broker_error = dict.fromkeys(names), f"broker unreachable: {type(exc).__name__}"
    async with state.engine.connect() as conn:
        holds = await read_api.expiring_holds(conn, EXPIRING_WITHIN_SECONDS)
    return render(
        request,
        "_health.html",
        services=await services(state),
        depths=depths,
        broker_error=broker_error,
        holds=holds,
        now=datetime.now(UTC).isoformat(timespec="seconds"),
    )
