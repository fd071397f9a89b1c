"""The structured log pipeline (shared.logs): what a log shipper reads from a process's stderr."""

from __future__ import annotations

import io
import json
import logging
import warnings
from collections.abc import Iterator
from typing import Any

import pytest
import structlog

from shared import logs


@pytest.fixture
def captured() -> Iterator[io.StringIO]:
    """Configure JSON logs into a buffer; put the process's logging back as it was afterwards."""
    root = logging.getLogger()
    saved = (root.handlers[:], root.level)
    buf = io.StringIO()
    logs.configure("unit", "INFO", json=True, stream=buf)
    try:
        yield buf
    finally:
        root.handlers[:], level = saved
        root.setLevel(level)
        structlog.reset_defaults()
        structlog.contextvars.clear_contextvars()
        logs.correlation_id.set("")
        logging.captureWarnings(False)


def lines(buf: io.StringIO) -> list[dict[str, Any]]:
    return [json.loads(line) for line in buf.getvalue().splitlines() if line.strip()]


def fail_deep() -> None:
    raise ValueError("the card was declined twice")


def test_a_logged_exception_keeps_its_traceback_in_the_json_line(captured: io.StringIO) -> None:
    log = logs.get_logger("services.unit_test")
    try:
        fail_deep()
    except ValueError:
        log.exception("handler_crashed", queue="inventory.checkout")

    (line,) = lines(captured)
    assert line["event"] == "handler_crashed" and line["level"] == "error" and line["queue"] == "inventory.checkout"
    assert "exc_info" not in line  # the old output: `"exc_info": true` and no traceback
    (exc,) = line["exception"]
    assert exc["exc_type"] == "ValueError" and exc["exc_value"] == "the card was declined twice"
    assert [f["name"] for f in exc["frames"]][-2:] == [
        "test_a_logged_exception_keeps_its_traceback_in_the_json_line",
        "fail_deep",
    ]
    # Frame locals can hold secrets (a DSN, a token): they are never rendered.
    assert all("locals" not in f or not f["locals"] for f in exc["frames"])


def test_a_stdlib_library_record_comes_out_as_json_with_the_correlation_id(captured: io.StringIO) -> None:
    logs.set_correlation_id("c0ffee42")
    logging.getLogger("aio_pika.robust_connection").warning("connection to %s lost", "rabbitmq:5672")
    try:
        empty: dict[str, int] = {}
        empty["missing"]  # a real KeyError, with a real traceback
    except KeyError:
        logging.getLogger("sqlalchemy.pool").exception("pool error")

    first, second = lines(captured)
    assert first == first | {
        "event": "connection to rabbitmq:5672 lost",
        "level": "warning",
        "logger": "aio_pika.robust_connection",
        "correlation_id": "c0ffee42",
        "service": "unit",
    }
    assert "timestamp" in first
    assert second["correlation_id"] == "c0ffee42" and second["level"] == "error"
    assert second["exception"][0]["exc_type"] == "KeyError"


def test_chatty_libraries_stay_at_warning_while_our_code_logs_at_info(captured: io.StringIO) -> None:
    # SQLAlchemy logs every statement once its logger allows INFO: that must not follow TICKETING_LOG_LEVEL.
    logging.getLogger("sqlalchemy.engine.Engine").info("SELECT secret FROM users")
    logging.getLogger("uvicorn.error").info("Started server process")
    logs.get_logger("services.gateway.access").info("http_request", status=200)
    logging.getLogger("__main__").info("a script's own stdlib logger")

    assert [line["event"] for line in lines(captured)] == ["http_request", "a script's own stdlib logger"]


def test_python_warnings_are_json_too(captured: io.StringIO) -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("always")
        warnings.warn("an old API", DeprecationWarning, stacklevel=1)

    (line,) = lines(captured)
    assert line["logger"] == "py.warnings" and "an old API" in line["event"]


def test_console_logs_show_the_traceback_as_text() -> None:
    root = logging.getLogger()
    saved = (root.handlers[:], root.level)
    buf = io.StringIO()
    logs.configure("unit", "INFO", json=False, stream=buf)
    try:
        try:
            fail_deep()
        except ValueError:
            logs.get_logger("services.unit_test").exception("handler_crashed")
    finally:
        root.handlers[:], level = saved
        root.setLevel(level)
        structlog.reset_defaults()
        structlog.contextvars.clear_contextvars()
        logging.captureWarnings(False)

    text = buf.getvalue()
    assert "handler_crashed" in text
    assert "Traceback (most recent call last)" in text and "ValueError: the card was declined twice" in text


def test_email_addresses_are_masked_in_every_line_ours_or_a_librarys() -> None:
    stream = io.StringIO()
    logs.configure("test", "INFO", json=True, stream=stream)
    logs.get_logger("ours").info("email_sent", recipient="alice.nguyen@example.com")
    logging.getLogger("aiosmtplib").warning("refused: SMTPRecipientsRefused([bob@mail.vn: 550])")
    text = stream.getvalue()
    assert "alice.nguyen@" not in text and "a***@example.com" in text
    assert "bob@" not in text and "b***@mail.vn" in text
    assert logs.mask_addresses("no address here") == "no address here"
