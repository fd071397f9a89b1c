"""Bearer JWT (HS256): claims ``sub``, ``email``, ``roles``; ``admin`` in roles for organisers and operators,
``scanner`` for door staff (the check-in routes only: ``DoorUser``)."""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Annotated

import jwt
from fastapi import Depends, Request
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer

from services.gateway.problems import Problem
from shared.settings import Settings

ADMIN = "admin"
SCANNER = "scanner"  # door staff: may check tickets in (and see the check-ins), nothing else of /admin
_bearer = HTTPBearer(auto_error=False)


@dataclass(frozen=True)
class User:
    id: str
    email: str
    roles: frozenset[str]
    locale: str = "vi"

    @property
    def is_admin(self) -> bool:
        return ADMIN in self.roles

    @property
    def can_scan(self) -> bool:
        return bool({ADMIN, SCANNER} & self.roles)


def issue_token(
    settings: Settings, sub: str, email: str, roles: list[str], ttl_seconds: int = 86_400, locale: str = "vi"
) -> str:
    now = int(time.time())
    claims = {
        "sub": sub,
        "email": email,
        "roles": roles,
        "locale": locale,
        "iat": now,
        "exp": now + ttl_seconds,
        "iss": settings.jwt_issuer,
    }
    return jwt.encode(claims, settings.jwt_secret.get_secret_value(), algorithm="HS256")


# Bounds of the claims: the largest values the rest of the system stores (CheckoutRequested.user_id is at most
# 200 characters); anything larger is a forged or broken token and is refused with 401, never a 500.
MAX_SUB = 200
MAX_EMAIL = 320
MAX_ROLES = 20
MAX_ROLE = 64
MAX_LOCALE = 16
_NUMERIC_DATES = ("exp", "iat", "nbf")


def _unauthorized(detail: str) -> Problem:
    return Problem(401, "Unauthorized", detail, "unauthorized")


def _is_numeric_date(value: object) -> bool:
    # RFC 7519 NumericDate is a JSON number; PyJWT would also accept the string "9999999999".
    return isinstance(value, int | float) and not isinstance(value, bool)


def decode_token(settings: Settings, token: str) -> User:
    audience = settings.jwt_audience or None
    required = ["sub", "exp", *(["aud"] if audience else [])]
    try:
        claims = jwt.decode(
            token,
            settings.jwt_secret.get_secret_value(),
            algorithms=["HS256"],
            issuer=settings.jwt_issuer,
            audience=audience,
            options={"require": required},
        )
    except jwt.PyJWTError as exc:
        raise _unauthorized(f"invalid bearer token: {exc}") from exc
    for name in _NUMERIC_DATES:
        if name in claims and not _is_numeric_date(claims[name]):
            raise _unauthorized(f"claim {name} must be a NumericDate (a number)")
    issued = claims["iat"] if "iat" in claims else time.time()
    if claims["exp"] - issued > settings.jwt_max_lifetime_seconds:
        raise _unauthorized(f"token lifetime above {settings.jwt_max_lifetime_seconds} s")
    sub, email = claims["sub"], claims.get("email", "")
    roles, locale = claims.get("roles") or [], claims.get("locale", "vi")
    if (
        not isinstance(sub, str)
        or not 0 < len(sub) <= MAX_SUB
        or not sub.isprintable()
        or not isinstance(email, str)
        or len(email) > MAX_EMAIL
        or not email.isprintable()
        or not isinstance(roles, list)
        or len(roles) > MAX_ROLES
        or not all(isinstance(r, str) and len(r) <= MAX_ROLE for r in roles)
        or not isinstance(locale, str)
        or len(locale) > MAX_LOCALE
    ):
        raise _unauthorized("malformed token claims")
    return User(id=sub, email=email, roles=frozenset(roles), locale=locale)


async def authenticate(request: Request) -> User:
    """The caller's user, decoded once per request (routes authenticate before their body is read)."""
    cached = getattr(request.state, "user", None)
    if isinstance(cached, User):
        return cached
    creds = await _bearer(request)
    if creds is None:
        raise _unauthorized("a bearer token is required")
    user = decode_token(request.app.state.settings, creds.credentials)
    request.state.user = user
    return user


async def current_user(
    request: Request, _creds: Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)]
) -> User:
    # _creds only documents the bearer scheme in /openapi.json; authenticate() reads the header itself.
    return await authenticate(request)


async def optional_user(request: Request) -> User | None:
    """The caller's user when a valid token came with the request, else None (never an error)."""
    try:
        return await authenticate(request)
    except Problem:
        return None


async def admin_user(user: Annotated[User, Depends(current_user)]) -> User:
    if not user.is_admin:
        raise Problem(403, "Forbidden", "this endpoint needs the admin role", "forbidden")
    return user


async def door_user(user: Annotated[User, Depends(current_user)]) -> User:
    if not user.can_scan:
        raise Problem(403, "Forbidden", "this endpoint needs the admin or scanner role", "forbidden")
    return user


CurrentUser = Annotated[User, Depends(current_user)]
AdminUser = Annotated[User, Depends(admin_user)]
DoorUser = Annotated[User, Depends(door_user)]
