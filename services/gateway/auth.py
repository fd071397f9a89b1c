"""Bearer JWT (HS256): claims ``sub``, ``email``, ``roles``; ``admin`` in roles for organisers and operators."""

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


def issue_token(settings: Settings, sub: str, email: str, roles: list[str], ttl_seconds: int = 86_400,
                locale: str = "vi") -> str:
    now = int(time.time())
    claims = {"sub": sub, "email": email, "roles": roles, "locale": locale, "iat": now,
              "exp": now + ttl_seconds, "iss": settings.jwt_issuer}
    return jwt.encode(claims, settings.jwt_secret.get_secret_value(), algorithm="HS256")


def decode_token(settings: Settings, token: str) -> User:
    try:
        claims = jwt.decode(
            token, settings.jwt_secret.get_secret_value(), algorithms=["HS256"],
            issuer=settings.jwt_issuer, options={"require": ["sub", "exp"]},
        )
    except jwt.PyJWTError as exc:
        raise Problem(401, "Unauthorized", f"invalid bearer token: {exc}", "unauthorized") from exc
    roles = claims.get("roles") or []
    if not isinstance(roles, list) or not isinstance(claims["sub"], str) or not claims["sub"]:
        raise Problem(401, "Unauthorized", "malformed token claims", "unauthorized")
    return User(id=claims["sub"], email=str(claims.get("email", "")), roles=frozenset(map(str, roles)),
                locale=str(claims.get("locale", "vi")))


async def current_user(
    request: Request, creds: Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)]
) -> User:
    if creds is None:
        raise Problem(401, "Unauthorized", "a bearer token is required", "unauthorized")
    return decode_token(request.app.state.settings, creds.credentials)


async def admin_user(user: Annotated[User, Depends(current_user)]) -> User:
    if not user.is_admin:
        raise Problem(403, "Forbidden", "this endpoint needs the admin role", "forbidden")
    return user


CurrentUser = Annotated[User, Depends(current_user)]
AdminUser = Annotated[User, Depends(admin_user)]
