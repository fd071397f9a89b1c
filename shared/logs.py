"""Structured logs with a correlation id carried from the HTTP request through every message.

One pipeline for everything a process logs: structlog's own events and the stdlib ``logging`` records of
uvicorn, aio-pika, FastStream and SQLAlchemy are all rendered by the same ``ProcessorFormatter`` (JSON lines
when ``log_json``), so a log shipper sees one format, and every line carries the service and correlation id.
"""

from __future__ import annotations

import logging
import re
import sys
import uuid
from contextvars import ContextVar
from typing import IO, Any

import structlog

correlation_id: ContextVar[str] = ContextVar("correlation_id", default="")

CORRELATION_HEADER = "x-correlation-id"

# Chatty libraries stay at ``library_level`` (WARNING) whatever ``log_level`` is: SQLAlchemy, for one, logs
# every statement as soon as its logger is enabled for INFO, and aio-pika every reconnect step.
LIBRARY_LOGGERS = (
    "uvicorn",
    "aio_pika",
    "aiormq",
    "faststream",
    "sqlalchemy",
    "asyncio",
    "httpx",
    "httpcore",
    "aiosmtplib",
    "mail.log",
)


def new_correlation_id() -> str:
    return uuid.uuid4().hex


def set_correlation_id(value: str) -> None:
    correlation_id.set(value)
    structlog.contextvars.bind_contextvars(correlation_id=value)


_ADDRESS = re.compile(r"([A-Za-z0-9._%+-])[A-Za-z0-9._%+-]*@([A-Za-z0-9-]+\.[A-Za-z0-9.-]+)")


def mask_addresses(text: str) -> str:
    """``alice@example.com`` -> ``a***@example.com``: logs name a buyer without spelling their address."""
    return _ADDRESS.sub(r"\1***@\2", text)


def _mask_email_addresses(_: Any, __: str, event: structlog.typing.EventDict) -> structlog.typing.EventDict:
    """Every string a log line carries, ours or a library's (an SMTP error names its recipient)."""
    for key, value in event.items():
        if isinstance(value, str) and "@" in value:
            event[key] = mask_addresses(value)
    return event


def _renderer(json: bool) -> list[structlog.typing.Processor]:
    if json:
        # Locals are left out on purpose: a frame's locals can hold a DSN, a token or a request body.
        tracebacks = structlog.processors.ExceptionRenderer(
            structlog.tracebacks.ExceptionDictTransformer(show_locals=False)
        )
        return [tracebacks, structlog.processors.JSONRenderer()]
    return [structlog.dev.ConsoleRenderer(colors=False, exception_formatter=structlog.dev.plain_traceback)]


def configure(
    service: str,
    level: str = "INFO",
    json: bool = False,
    *,
    stream: IO[str] | None = None,
    library_level: str = "WARNING",
) -> None:
    """Configure structlog and the stdlib root logger of this process (call once, at start-up)."""
    numeric_level = logging.getLevelName(level.upper())
    shared: list[structlog.typing.Processor] = [
        structlog.contextvars.merge_contextvars,
        structlog.stdlib.add_log_level,
        structlog.stdlib.add_logger_name,
        structlog.processors.TimeStamper(fmt="iso", utc=True),
        _mask_email_addresses,
    ]
    structlog.configure(
        processors=[*shared, structlog.stdlib.ProcessorFormatter.wrap_for_formatter],
        wrapper_class=structlog.make_filtering_bound_logger(numeric_level),
        logger_factory=structlog.stdlib.LoggerFactory(),
        cache_logger_on_first_use=True,
    )
    formatter = structlog.stdlib.ProcessorFormatter(
        foreign_pre_chain=shared,
        processors=[structlog.stdlib.ProcessorFormatter.remove_processors_meta, *_renderer(json)],
    )
    handler = logging.StreamHandler(stream or sys.stderr)
    handler.setFormatter(formatter)
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(numeric_level)
    for name in (*LIBRARY_LOGGERS, "uvicorn.error", "uvicorn.access"):
        # uvicorn's default dictConfig gives its loggers handlers of their own and stops propagation; servers
        # here run with ``log_config=None`` and these loggers hand their records to the root handler.
        lib = logging.getLogger(name)
        lib.handlers.clear()
        lib.propagate = True
    for name in LIBRARY_LOGGERS:
        logging.getLogger(name).setLevel(logging.getLevelName(library_level.upper()))
    # A library's DeprecationWarning is a line of the same JSON, not a bare line on stderr.
    logging.captureWarnings(True)
    structlog.contextvars.bind_contextvars(service=service)


def get_logger(name: str = "ticketing") -> structlog.typing.FilteringBoundLogger:
    return structlog.get_logger(name)  # type: ignore[no-any-return]
