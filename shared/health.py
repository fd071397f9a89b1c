"""/healthz, /readyz and /metrics for every service; the consumer services serve them on their own port."""

from __future__ import annotations

import asyncio
import os
from collections.abc import Awaitable, Callable

import uvicorn
from fastapi import APIRouter, FastAPI, Request, Response
from fastapi.responses import JSONResponse
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from shared import metrics as shared_metrics
from shared.settings import Settings

ReadinessCheck = Callable[[], Awaitable[None]]


def health_router(
    checks: dict[str, ReadinessCheck],
    show_details: Callable[[Request], Awaitable[bool]] | None = None,
    metrics: bool = True,
    warnings: Callable[[], list[str]] | None = None,
) -> APIRouter:
    """``show_details`` decides per request whether /readyz names the failing checks and their errors (which
    tell hosts and ports); None means always (the consumer services' own ports are not public).
    ``metrics=False`` leaves /metrics to the caller (the gateway serves it to admins only). ``warnings``: what an
    operator should know that does not make the service unready (the broker's descriptor budget)."""
    router = APIRouter(tags=["ops"])

    @router.get("/healthz")
    async def healthz() -> dict[str, str]:
        return {"status": "ok"}

    @router.get("/readyz")
    async def readyz(request: Request) -> Response:
        failures = await run_checks(checks)
        detailed = show_details is None or await show_details(request)
        noted = warnings() if detailed and warnings is not None else []
        notes = {"warnings": noted} if noted else {}
        if failures:
            body = {"status": "unavailable", **({"failures": failures} if detailed else {}), **notes}
            return JSONResponse(body, status_code=503)
        return JSONResponse({"status": "ready", **({"checks": sorted(checks)} if detailed else {}), **notes})

    if metrics:

        @router.get("/metrics")
        async def metrics_page() -> Response:
            return metrics_response()

    return router


async def run_checks(checks: dict[str, ReadinessCheck]) -> dict[str, str]:
    """The failing checks, each with why (empty: ready)."""
    failures: dict[str, str] = {}
    for name, check in checks.items():
        try:
            await asyncio.wait_for(check(), timeout=2.0)
        except Exception as exc:
            failures[name] = f"{type(exc).__name__}: {exc}"[:300]
    return failures


def service_ports(settings: Settings) -> dict[str, int]:
    """Where each consumer service serves /readyz (on ``settings.service_host``); 0 = not served."""
    ports = {
        "inventory": settings.inventory_port,
        "payment": settings.payment_port,
        "mailer": settings.mailer_port,
        "search": settings.search_port,
        "ops": settings.ops_port,
    }
    if settings.paysim_active:
        ports["paysim"] = settings.paysim_port
    return ports


def metrics_response() -> Response:
    return Response(generate_latest(), media_type=CONTENT_TYPE_LATEST)


async def serve(app: FastAPI, host: str, port: int) -> uvicorn.Server:
    """Start serving in the background and return the server (set ``should_exit`` to stop it)."""
    # log_config=None: uvicorn's records go through shared.logs' pipeline, not uvicorn's own formatter.
    server = uvicorn.Server(
        uvicorn.Config(
            app, host=host, port=port, log_level="warning", lifespan="off", access_log=False, log_config=None
        )
    )
    asyncio.get_running_loop().create_task(server.serve())
    while not server.started:
        await asyncio.sleep(0.01)
        if server.should_exit:
            raise RuntimeError(f"could not serve on {host}:{port}")
    return server


async def serve_service_health(
    service: str,
    host: str,
    port: int,
    checks: dict[str, ReadinessCheck],
    warnings: Callable[[], list[str]] | None = None,
) -> uvicorn.Server | None:
    """A consumer service's own /healthz, /readyz and /metrics on ``port`` (0 = none)."""
    # Several replicas may run (`ticketing up --scale`): /metrics says which one this is.
    shared_metrics.PROCESS.info(
        {"service": service, "replica": os.environ.get("TICKETING_REPLICA", service), "pid": str(os.getpid())}
    )
    if not port:
        return None
    app = FastAPI(title=f"ticketing {service}")
    app.include_router(health_router(checks, warnings=warnings))
    return await serve(app, host, port)
