"""One line instead of a traceback when a server the CLI needs is down or refuses it.

Every command reaches PostgreSQL, RabbitMQ or Redis through a different library, each with its own
exceptions (and asyncpg lets a bare ``ConnectionRefusedError`` through), so the exception chain and the
frames it was raised in are matched to the server, and the message names the server, where it was looked
for (credentials left out) and what to do.
"""

from __future__ import annotations

import traceback
from collections.abc import Iterator
from dataclasses import dataclass
from urllib.parse import urlsplit

import click

from shared import logs
from shared.settings import Settings, get_settings


@dataclass(frozen=True)
class Server:
    name: str
    setting: str  # the TICKETING_* variable that says where it is
    start: str  # how to start it locally
    packages: tuple[str, ...]  # the client libraries whose exceptions and frames point at it


SERVERS = (
    Server(
        "PostgreSQL",
        "TICKETING_DATABASE_URL",
        "pg_ctlcluster --skip-systemctl-redirect $(ls /etc/postgresql) main start",
        ("asyncpg", "sqlalchemy"),
    ),
    Server("RabbitMQ", "TICKETING_RABBITMQ_URL", "rabbitmq-server -detached", ("aiormq", "aio_pika", "pamqp")),
    Server("Redis", "TICKETING_REDIS_URL", "redis-server --daemonize yes", ("redis",)),
)


def _chain(exc: BaseException) -> Iterator[BaseException]:
    seen: set[int] = set()
    current: BaseException | None = exc
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        yield current
        current = current.__cause__ or current.__context__


def _package(exc: BaseException) -> str:
    return type(exc).__module__.split(".")[0]


def _frames_package(exc: BaseException) -> set[str]:
    """The client libraries the exception passed through (a bare OSError from asyncpg's connect says
    nothing by its type)."""
    found: set[str] = set()
    for frame in traceback.extract_tb(exc.__traceback__):
        for server in SERVERS:
            for pkg in server.packages:
                if f"/{pkg}/" in frame.filename.replace("\\", "/"):
                    found.add(pkg)
    return found


def _where(server: Server, settings: Settings) -> str:
    url = {"PostgreSQL": settings.database_url, "RabbitMQ": settings.rabbitmq_url, "Redis": settings.redis_url}
    parts = urlsplit(url[server.name])
    host = parts.hostname or "localhost"
    try:
        port = f":{parts.port}" if parts.port else ""
    except ValueError:
        port = ""
    return f"{host}{port}"


def _kind(exc: BaseException) -> str:
    """'auth', 'missing_database' or 'unreachable' (or '' when this is not a server problem)."""
    name = type(exc).__name__
    if name in (
        "InvalidPasswordError",
        "InvalidAuthorizationSpecificationError",
        "ProbableAuthenticationError",
        "AuthenticationError",
        "AuthenticationWrongNumberOfArgsError",
    ):
        return "auth"
    if name == "InvalidCatalogNameError":
        return "missing_database"
    if isinstance(exc, (OSError, TimeoutError)) or name in (
        "AMQPConnectionError",
        "ConnectionError",
        "TimeoutError",
        "CannotConnectNowError",
        "ConnectionDoesNotExistError",
        "IncompleteReadError",
        "ConnectionClosed",
    ):
        return "unreachable"
    return ""


def explain(exc: BaseException, settings: Settings | None = None) -> str | None:
    """A one-line explanation with a hint when ``exc`` means a server is down or refuses us; else None."""
    for link in _chain(exc):
        kind = _kind(link)
        if not kind:
            continue
        packages = {_package(link)} | _frames_package(link)
        server = next((s for s in SERVERS if packages & set(s.packages)), None)
        if server is None:
            continue
        try:
            settings = settings or get_settings()
            where = f" at {_where(server, settings)}"
        except Exception:  # invalid settings are reported by pydantic elsewhere; keep the one line
            where = ""
        reason = str(link).strip().splitlines()[0][:160] if str(link).strip() else type(link).__name__
        if kind == "auth":
            return f"{server.name}{where} refused the login ({reason}); check the user and password in {server.setting}"
        if kind == "missing_database":
            return f"{server.name}{where}: {reason}; create it and its tables with `ticketing migrate`"
        return (
            f"cannot reach {server.name}{where} ({reason}); start it (`{server.start}`) or point {server.setting} at it"
        )
    return None


class FriendlyGroup(click.Group):
    """A click group whose commands end with one line and exit code 1 when a server is down."""

    def invoke(self, ctx: click.Context) -> object:
        # Client libraries log their own connection failures (aio-pika: "error when creating transport");
        # the line below says it once, so the CLI shows only warnings of its own.
        logs.configure("cli", "WARNING", library_level="CRITICAL")
        try:
            return super().invoke(ctx)
        except click.ClickException:
            raise
        except Exception as exc:
            message = explain(exc)
            if message is None:
                raise
            raise click.ClickException(message) from None
