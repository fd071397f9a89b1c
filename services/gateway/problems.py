"""Errors at the HTTP edge as RFC 9457 problem details (application/problem+json)."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from pydantic import BaseModel, ConfigDict
from starlette.exceptions import HTTPException as StarletteHTTPException

from shared import logs

PROBLEM_JSON = "application/problem+json"
TYPE_BASE = "https://ticketing.example/problems/"
log = logs.get_logger(__name__)


class Problem(Exception):
    def __init__(self, status: int, title: str, detail: str, kind: str, **extra: Any) -> None:
        super().__init__(detail)
        self.status, self.title, self.detail, self.kind, self.extra = status, title, detail, kind, extra
        self.headers: dict[str, str] = {}


def problem_response(
    status: int, title: str, detail: str, kind: str, headers: dict[str, str] | None = None, **extra: Any
) -> JSONResponse:
    body = {"type": TYPE_BASE + kind, "title": title, "status": status, "detail": detail, **extra}
    return JSONResponse(body, status_code=status, media_type=PROBLEM_JSON, headers=headers)


def for_problem(exc: Problem) -> JSONResponse:
    headers = dict(exc.headers)
    if exc.status == 401:
        headers.setdefault("WWW-Authenticate", "Bearer")
    return problem_response(exc.status, exc.title, exc.detail, exc.kind, headers, **exc.extra)


def invalid_request(errors: Iterable[Any]) -> JSONResponse:
    """422 for a request that does not match the schema: each error's location, message and type."""
    shown = [{"loc": list(e.get("loc", ())), "msg": e.get("msg", ""), "type": e.get("type", "")} for e in errors]
    return problem_response(
        422, "Invalid request", "the request does not match the schema", "invalid-request", errors=shown
    )


def body_too_large(detail: str) -> JSONResponse:
    return problem_response(413, "Request body too large", detail, "body-too-large")


def internal_error(path: str) -> JSONResponse:
    log.exception("unhandled_error", path=path)
    return problem_response(500, "Internal error", "an unexpected error occurred", "internal")


def install(app: FastAPI) -> None:
    @app.exception_handler(Problem)
    async def _problem(request: Request, exc: Problem) -> JSONResponse:
        return for_problem(exc)

    @app.exception_handler(RequestValidationError)
    async def _invalid(request: Request, exc: RequestValidationError) -> JSONResponse:
        return invalid_request(exc.errors())

    @app.exception_handler(StarletteHTTPException)
    async def _http(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        if exc.status_code == 413:  # edge.BodyTooLarge, raised while the body streams in
            return body_too_large(str(exc.detail))
        return problem_response(exc.status_code, str(exc.detail), str(exc.detail), f"http-{exc.status_code}")

    @app.exception_handler(Exception)
    async def _unexpected(request: Request, exc: Exception) -> JSONResponse:
        return internal_error(request.url.path)


class ProblemDetails(BaseModel):
    """RFC 9457: what every error of this API answers, as ``application/problem+json``."""

    model_config = ConfigDict(extra="allow", title="Problem")

    type: str
    title: str
    status: int
    detail: str
    errors: list[dict[str, Any]] | None = None  # 422: each field that does not match the schema


# Routes that need a bearer token (the gateway authenticates before it reads a body: edge.py).
AUTHENTICATED_PREFIXES = ("/checkout", "/orders", "/admin", "/metrics")
_PROBLEM_REF = {PROBLEM_JSON: {"schema": {"$ref": "#/components/schemas/Problem"}}}


def document(app: FastAPI) -> None:
    """Make the OpenAPI document say what the API really answers: every error is problem+json (FastAPI's own
    validation body is never sent), 401 where a token is needed, and /metrics is Prometheus text."""
    generate = app.openapi

    def openapi() -> dict[str, Any]:
        if app.openapi_schema:
            return app.openapi_schema
        schema = generate()
        components = schema.setdefault("components", {}).setdefault("schemas", {})
        components["Problem"] = ProblemDetails.model_json_schema(ref_template="#/components/schemas/{model}")
        for path, operations in schema.get("paths", {}).items():
            for operation in operations.values():
                responses = operation.setdefault("responses", {})
                if path.startswith(AUTHENTICATED_PREFIXES):
                    responses.setdefault("401", {"description": "no valid bearer token"})
                if operation.get("parameters") or operation.get("requestBody"):
                    responses.setdefault("422", {"description": "the request does not match the schema"})
                for code, response in responses.items():
                    if code[0] in "45":
                        response["content"] = dict(_PROBLEM_REF)
                        response.setdefault("description", "a problem")
                if path == "/metrics" and "200" in responses:
                    responses["200"]["content"] = {"text/plain": {"schema": {"type": "string"}}}
        for unused in ("HTTPValidationError", "ValidationError"):
            components.pop(unused, None)
        app.openapi_schema = schema
        return schema

    app.openapi = openapi  # type: ignore[method-assign]
