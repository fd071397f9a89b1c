"""What every request meets before a route reads its body: the body cap, authentication and rate limits.

FastAPI reads and parses a route's JSON body before it solves the route's dependencies, so a bearer-token
dependency alone lets anyone make the gateway parse 20 MB of JSON (and answer 422 instead of 401). Routes of
the ``EdgeRoute`` class run their authentication, role check (admin; admin or scanner) and rate limits first,
from the headers; only then is the body read, through ``BodyLimit``, which counts the bytes as they arrive.
"""

from __future__ import annotations

from collections.abc import Callable, Coroutine
from typing import Any

from fastapi import Request, Response
from fastapi.dependencies.models import Dependant
from fastapi.routing import APIRoute
from starlette.exceptions import HTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from services.gateway import auth
from services.gateway.problems import Problem
from services.gateway.ratelimit import RateLimit

ADMIN_PREFIX = "/admin/"


class BodyTooLarge(HTTPException):
    """Raised from ``receive`` when a body passes its cap; FastAPI re-raises HTTPExceptions from body reading,
    and problems.install answers it with a 413 problem."""

    def __init__(self, limit: int) -> None:
        super().__init__(413, f"the request body is larger than {limit} bytes")
        self.limit = limit


class BodyLimit:
    """Cap request bodies while they stream in: the declared Content-Length is refused at the first read, a
    chunked body as soon as its running total passes the cap. Nothing is read before the route asks for it, so
    a route that refuses the caller first (401) never reads a byte of the body."""

    def __init__(self, app: ASGIApp, limit: int, admin_limit: int) -> None:
        self.app, self.limit, self.admin_limit = app, limit, admin_limit

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        limit = self.admin_limit if scope["path"].startswith(ADMIN_PREFIX) else self.limit
        declared = _content_length(scope)
        received = 0

        async def limited_receive() -> Message:
            nonlocal received
            if declared is not None and declared > limit:
                raise BodyTooLarge(limit)
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > limit:
                    raise BodyTooLarge(limit)
            return message

        await self.app(scope, limited_receive, send)


def _content_length(scope: Scope) -> int | None:
    for name, value in scope["headers"]:
        if name == b"content-length":
            try:
                return int(value)
            except ValueError:
                return None
    return None


def _calls(dependant: Dependant) -> list[Any]:
    found: list[Any] = []
    for dep in dependant.dependencies:
        found.extend(_calls(dep))
        found.append(dep.call)
    return found


class EdgeRoute(APIRoute):
    """An APIRoute that authenticates (and checks the admin role and rate limits) before reading its body."""

    def get_route_handler(self) -> Callable[[Request], Coroutine[Any, Any, Response]]:
        handler = super().get_route_handler()
        calls = _calls(self.dependant)
        needs_admin = auth.admin_user in calls
        needs_door = auth.door_user in calls
        needs_user = needs_admin or needs_door or auth.current_user in calls
        limits = [c for c in calls if isinstance(c, RateLimit)]

        async def edge_handler(request: Request) -> Response:
            if needs_user:
                user = await auth.authenticate(request)
                if needs_admin and not user.is_admin:
                    raise Problem(403, "Forbidden", "this endpoint needs the admin role", "forbidden")
                if needs_door and not user.can_scan:
                    raise Problem(403, "Forbidden", "this endpoint needs the admin or scanner role", "forbidden")
            for limit in limits:
                await limit(request)
            return await handler(request)

        return edge_handler
