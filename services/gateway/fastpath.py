"""POST /checkout, the flash sale's hot route, answered before FastAPI's routing.

A checkout through FastAPI pays for its router (a regex match per route until /checkout), the dependency
solver, the request-validation wrappers and the metrics middleware's own route lookup: about 0.6 ms of the
gateway's CPU per request, more than the checkout's own work when the sold-out gate answers it
(docs/decisions.md, section 7). This ASGI middleware takes POST /checkout itself and does, in the same order,
what the route's FastAPI stack does (the route in api.py stays, for the OpenAPI document and as the same code):

- the correlation id and the access log (the same middlewares), the body cap (``BodyLimit``);
- authentication, then the checkout rate limit, before a byte of the body is read (as ``edge.EdgeRoute``);
- the Idempotency-Key header and the body validated against the same models, a 422 problem that names each
  field (``loc`` starts with ``header`` or ``body``, as FastAPI's) when they do not match;
- ``api.place_checkout``, the route's own code; every error as its problem+json (problems.py);
- the request metrics, recorded into the instrumentator's own (``http_requests_total{handler="/checkout"}``).
"""

from __future__ import annotations

import time
from typing import Annotated, Any

from prometheus_fastapi_instrumentator import Instrumentator
from prometheus_fastapi_instrumentator.metrics import Info
from pydantic import StringConstraints, TypeAdapter, ValidationError
from starlette.requests import Request
from starlette.responses import Response
from starlette.types import ASGIApp, Receive, Scope, Send

from services.gateway import api, auth, problems, ratelimit
from services.gateway.edge import BodyLimit, BodyTooLarge
from services.gateway.observability import AccessLogMiddleware, CorrelationMiddleware
from services.gateway.problems import Problem
from services.gateway.schemas import CheckoutIn

PATH = "/checkout"
_IDEMPOTENCY_KEY = TypeAdapter(Annotated[str, StringConstraints(min_length=1, max_length=api.MAX_IDEMPOTENCY_KEY)])


class CheckoutFastPath:
    """Answer POST /checkout here; hand every other request to ``app`` (FastAPI's stack)."""

    def __init__(self, app: ASGIApp, body_limit: int, instrumentator: Instrumentator) -> None:
        self.app = app
        self.instrumentator = instrumentator
        self._checkout = CorrelationMiddleware(AccessLogMiddleware(BodyLimit(self._answer, body_limit, body_limit)))

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and scope["path"] == PATH and scope["method"] == "POST":
            await self._checkout(scope, receive, send)
        else:
            await self.app(scope, receive, send)

    async def _answer(self, scope: Scope, receive: Receive, send: Send) -> None:
        started = time.perf_counter()
        request = Request(scope, receive)
        try:
            response = await _checkout(request)
        except Problem as exc:
            response = problems.for_problem(exc)
        except BodyTooLarge as exc:
            response = problems.body_too_large(str(exc.detail))
        except Exception:
            response = problems.internal_error(PATH)
        await response(scope, receive, send)
        self._record(request, response, time.perf_counter() - started)

    def _record(self, request: Request, response: Response, seconds: float) -> None:
        info = Info(
            request=request,
            response=response,
            method="POST",
            modified_handler=PATH,
            modified_status=f"{str(response.status_code)[0]}xx",
            modified_duration=seconds,
            modified_duration_without_streaming=seconds,
        )
        for instrumentation in self.instrumentator.instrumentations:
            instrumentation(info)


async def _checkout(request: Request) -> Response:
    user = await auth.authenticate(request)
    await ratelimit.enforce(request, ratelimit.CHECKOUT, user.id)
    errors: list[Any] = []
    key = request.headers.get("idempotency-key")
    if key is not None:
        try:
            _IDEMPOTENCY_KEY.validate_python(key)
        except ValidationError as exc:
            errors += [{**e, "loc": ("header", "idempotency-key")} for e in exc.errors()]
    body, body_errors = _body(request.headers.get("content-type"), await request.body())
    errors += body_errors
    if errors or body is None:
        return problems.invalid_request(errors)
    return await api.place_checkout(request, body, user, key)


def _body(content_type: str | None, raw: bytes) -> tuple[CheckoutIn | None, list[Any]]:
    """The body as CheckoutIn, or the errors FastAPI would give for it (a body that is not JSON by its
    Content-Type is validated as bytes, and so refused, as FastAPI does)."""
    if not raw:
        return None, [{"loc": ("body",), "msg": "Field required", "type": "missing"}]
    if not _is_json(content_type):
        return None, [{"loc": ("body",), "msg": "Input should be a valid dictionary or object", "type": "model_type"}]
    try:
        return CheckoutIn.model_validate_json(raw), []
    except ValidationError as exc:
        return None, [{**e, "loc": ("body", *e["loc"])} for e in exc.errors()]


def _is_json(content_type: str | None) -> bool:
    if not content_type:
        return True  # FastAPI parses a body without a Content-Type as JSON
    kind = content_type.partition(";")[0].strip().lower()
    main, _, sub = kind.partition("/")
    return main == "application" and (sub == "json" or sub.endswith("+json"))
