"""The console's wiring: sign-in and sign-out, its pages (each module a concern), the vendored static files, and
how a refused session or CSRF token is answered. None of it is in the OpenAPI document: it is HTML for people."""

from __future__ import annotations

import time

import jwt
from fastapi import APIRouter, FastAPI, Request, Response
from fastapi.responses import RedirectResponse
from fastapi.staticfiles import StaticFiles

from services.gateway.console import dlq_pages, health_pages, jobs_pages, payments_pages
from services.gateway.console.rendering import STATIC_DIR, is_htmx, render
from services.gateway.console.session import (
    COOKIE,
    ConsoleAdmin,
    ConsoleForm,
    CsrfRefused,
    SignInRequired,
    admin_from_token,
    read_form,
)

PREFIX = "/ops"
router = APIRouter(prefix=PREFIX, include_in_schema=False)


@router.get("")
async def home(user: ConsoleAdmin) -> RedirectResponse:
    return RedirectResponse(f"{PREFIX}/dlq", status_code=303)


@router.get("/login")
async def login_page(request: Request) -> Response:
    return render(request, "login.html", error="")


@router.post("/login")
async def login(request: Request) -> Response:
    """Check the pasted token like the admin API does; only an admin's becomes a session (a cookie)."""
    token = (await read_form(request)).get("token", "").strip()
    if not token:
        raise SignInRequired(401, "Paste an admin bearer token.")
    admin_from_token(request, token)
    exp = jwt.decode(token, options={"verify_signature": False}).get("exp", 0)
    response = RedirectResponse(f"{PREFIX}/dlq", status_code=303)
    response.set_cookie(
        COOKIE,
        token,
        max_age=max(0, int(exp - time.time())),
        path=PREFIX,
        httponly=True,
        samesite="strict",
        secure=request.url.scheme == "https",
    )
    return response


@router.post("/logout")
async def logout(request: Request, form: ConsoleForm) -> Response:
    response = RedirectResponse(f"{PREFIX}/login", status_code=303)
    response.delete_cookie(COOKIE, path=PREFIX, httponly=True, samesite="strict")
    return response


for pages in (dlq_pages, jobs_pages, payments_pages, health_pages):
    router.include_router(pages.router)


def _sign_in(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, SignInRequired)
    if is_htmx(request):  # a fragment request whose session ended: the whole page goes to the sign-in form
        return Response(status_code=exc.status, headers={"HX-Redirect": f"{PREFIX}/login"})
    request.state.user, request.state.csrf = None, ""
    response = render(request, "login.html", exc.status, error=exc.reason)
    if request.cookies.get(COOKIE):
        response.delete_cookie(COOKIE, path=PREFIX, httponly=True, samesite="strict")
    return response


def _csrf(request: Request, exc: Exception) -> Response:
    return render(
        request,
        "_message.html",
        403,
        kind="error",
        title="Refused",
        text=f"{exc}: reload the page and try again. Nothing was changed.",
    )


def install(app: FastAPI) -> None:
    app.include_router(router)
    app.mount(f"{PREFIX}/static", StaticFiles(directory=STATIC_DIR), name="console-static")
    app.add_exception_handler(SignInRequired, _sign_in)
    app.add_exception_handler(CsrfRefused, _csrf)
