"""Logs and metrics as an operator meets them: a real gateway process's stderr, every service's /metrics."""

from __future__ import annotations

import json
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.harness import Stack, eventually, free_port

DEPLOY = Path(__file__).resolve().parents[2] / "deploy"


@pytest.fixture
def json_gateway(stack: Stack) -> Iterator[tuple[str, Path]]:
    """A second gateway on the run's servers, logging JSON at INFO into a file (the shared stack's services
    log at WARNING to the terminal)."""
    port = free_port()
    env = {
        **stack.env,
        "TICKETING_GATEWAY_PORT": str(port),
        "TICKETING_LOG_JSON": "true",
        "TICKETING_LOG_LEVEL": "INFO",
    }
    with tempfile.TemporaryDirectory() as tmp:
        log_path = Path(tmp) / "gateway.log"
        with log_path.open("wb") as out:
            proc = subprocess.Popen([sys.executable, "-m", "services.gateway"], env=env, stdout=out, stderr=out)
            try:
                yield f"http://127.0.0.1:{port}", log_path
            finally:
                proc.terminate()
                try:
                    proc.wait(20)
                except subprocess.TimeoutExpired:
                    proc.kill()
                    proc.wait()


def json_lines(path: Path) -> list[dict[str, Any]]:
    """Every line the process wrote; each must be JSON (uvicorn's and the libraries' lines included)."""
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


async def test_the_gateway_writes_one_json_access_line_per_request_with_the_correlation_id(
    json_gateway: tuple[str, Path],
) -> None:
    base_url, log_path = json_gateway

    async def ready() -> bool:
        try:
            async with httpx.AsyncClient(base_url=base_url, timeout=2) as c:
                return (await c.get("/readyz")).status_code == 200
        except httpx.HTTPError:
            return False

    await eventually(ready, timeout=60, interval=0.2, what="the JSON-logging gateway to be ready")
    async with httpx.AsyncClient(base_url=base_url, timeout=10) as c:
        ok = await c.get("/events", params={"secret": "not-in-the-log"}, headers={"X-Correlation-Id": "fc-access-1"})
        missing = await c.get("/no-such-page", headers={"X-Correlation-Id": "fc-access-2"})
    assert ok.status_code == 200 and missing.status_code == 404
    assert ok.headers["x-correlation-id"] == "fc-access-1"

    def access_lines() -> list[dict[str, Any]]:
        return [
            line
            for line in json_lines(log_path)
            if line.get("event") == "http_request" and line.get("correlation_id", "").startswith("fc-access")
        ]

    found = await eventually(lambda: _async(access_lines()), timeout=10, what="access log lines")
    by_id = {line["correlation_id"]: line for line in found}
    assert by_id["fc-access-1"] | {"duration_ms": 0} == by_id["fc-access-1"] | {
        "method": "GET",
        "path": "/events",
        "status": 200,
        "service": "gateway",
        "level": "info",
        "duration_ms": 0,
    }
    assert isinstance(by_id["fc-access-1"]["duration_ms"], float | int) and by_id["fc-access-1"]["duration_ms"] >= 0
    assert by_id["fc-access-2"]["status"] == 404 and by_id["fc-access-2"]["path"] == "/no-such-page"
    assert "not-in-the-log" not in log_path.read_text()  # query strings are not logged
    # uvicorn's own access log is off: each request is logged once.
    assert sum('"fc-access-1"' in line for line in log_path.read_text().splitlines()) == 1


async def _async(value: Any) -> Any:
    return value
