"""The console's session: the operator's admin bearer token in a cookie, checked on every request exactly as the
JSON admin routes check it (``auth.decode_token`` and the admin role), and a CSRF token for every POST.

The cookie is HttpOnly (no script reads it), SameSite=Strict (no other site's page sends it) and Secure when the
console is served over https. The CSRF token is an HMAC of the session's token under the JWT secret: bound to the
session, nothing to store, and a form or htmx request without it (or with another session's) is refused.
"""

from __future__ import annotations

import hashlib
import hmac
from typing import Annotated
from urllib.parse import parse_qs

from fastapi import Depends, Request

from services.gateway import auth
from services.gateway.problems import Problem

COOKIE = "ticketing_console"
CSRF_FIELD = "csrf"
CSRF_HEADER = "x-csrf-token"
MAX_FORM_BYTES = 64 * 1024


class SignInRequired(Exception):
    """Answered with the sign-in page (401: no or invalid session; 403: not an admin). Never a page with data."""

    def __init__(self, status: int, reason: str) -> None:
        super().__init__(reason)
        self.status, self.reason = status, reason


class CsrfRefused(Exception):
    """A state-changing request without this session's CSRF token: 403, nothing done."""


def csrf_token(request: Request, token: str) -> str:
    secret = request.app.state.settings.jwt_secret.get_secret_value().encode()
    return hmac.new(secret, b"console-csrf\x00" + token.encode(), hashlib.sha256).hexdigest()


def admin_from_token(request: Request, token: str) -> auth.User:
    """The admin user of ``token``, or SignInRequired: the same decoding and role check as the admin API."""
    try:
        user = auth.decode_token(request.app.state.settings, token)
    except Problem as exc:
        raise SignInRequired(401, f"The token was refused: {exc.detail}") from exc
    if not user.is_admin:
        raise SignInRequired(403, "This token has no admin role: the console is for operators only.")
    return user


def session_token(request: Request) -> str:
    token = request.cookies.get(COOKIE, "")
    if not token:
        raise SignInRequired(401, "")
    return token


async def console_admin(request: Request) -> auth.User:
    """Dependency of every console page and action."""
    user = admin_from_token(request, session_token(request))
    request.state.user = user
    request.state.csrf = csrf_token(request, session_token(request))
    return user


async def read_form(request: Request) -> dict[str, str]:
    """The url-encoded form (first value of each field), read only after the session was checked."""
    body = await request.body()
    if len(body) > MAX_FORM_BYTES:
        raise CsrfRefused("form too large")
    parsed = parse_qs(body.decode(errors="replace"), keep_blank_values=True, max_num_fields=200)
    return {k: v[0] for k, v in parsed.items()}


async def checked_form(request: Request, user: Annotated[auth.User, Depends(console_admin)]) -> dict[str, str]:
    """Dependency of every state-changing console route: the session's admin, then its CSRF token (form field
    or X-CSRF-Token header, as htmx sends it), then the form."""
    form = await read_form(request)
    given = request.headers.get(CSRF_HEADER) or form.get(CSRF_FIELD, "")
    if not given or not hmac.compare_digest(given, request.state.csrf):
        raise CsrfRefused("the CSRF token is missing or wrong")
    return form


ConsoleAdmin = Annotated[auth.User, Depends(console_admin)]
ConsoleForm = Annotated[dict[str, str], Depends(checked_form)]
