"""Logs and metrics as an operator meets them: a real gateway process's stderr, every service's /metrics."""

from __future__ import annotations

import json
import re
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml

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
        lines = [
            line
            for line in json_lines(log_path)
            if line.get("event") == "http_request" and line.get("correlation_id", "").startswith("fc-access")
        ]
        # Both requests' lines (the second is written a moment after the first): until then, keep polling.
        return lines if {line["correlation_id"] for line in lines} >= {"fc-access-1", "fc-access-2"} else []

    found = await eventually(lambda: _async(access_lines()), timeout=10, what="both access log lines")
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


PROMQL_METRIC = re.compile(r"\b((?:ticketing|http|faststream)_[a-zA-Z0-9_]+)\b")
SYNTHESIZED_BY_PROMETHEUS = {"up"}


def exported_names(text: str) -> set[str]:
    """Sample names a /metrics page offers, including those of label sets not observed yet (from # TYPE)."""
    names: set[str] = set()
    suffixes = {"histogram": ("_bucket", "_sum", "_count"), "summary": ("", "_sum", "_count")}
    for line in text.splitlines():
        if line.startswith("# TYPE "):
            _, _, name, kind = line.split(maxsplit=3)
            names.update(name + s for s in suffixes.get(kind, ("",)))
        elif line and not line.startswith("#"):
            names.add(re.split(r"[{ ]", line, maxsplit=1)[0])
    return names


async def scrape_all(stack: Stack) -> dict[str, str]:
    s = stack.settings
    ports = {
        "inventory": s.inventory_port,
        "payment": s.payment_port,
        "mailer": s.mailer_port,
        "search": s.search_port,
        "ops": s.ops_port,
        "gateway": s.gateway_port,
    }
    pages: dict[str, str] = {}
    admin = {"Authorization": f"Bearer {stack.token('prometheus', admin=True)}"}  # the gateway's is admin-only
    async with httpx.AsyncClient(timeout=10, headers=admin) as c:
        for service, port in ports.items():
            r = await c.get(f"http://127.0.0.1:{port}/metrics")
            assert r.status_code == 200, (service, r.status_code)
            pages[service] = r.text
    return pages


def metric_names_in(exprs: list[str]) -> set[str]:
    return {m for e in exprs for m in PROMQL_METRIC.findall(e)}


def alert_exprs() -> list[str]:
    rules = yaml.safe_load((DEPLOY / "prometheus" / "alerts.yml").read_text())
    return [str(rule["expr"]) for group in rules["groups"] for rule in group["rules"]]


def dashboard_exprs() -> list[str]:
    dashboard = json.loads((DEPLOY / "grafana" / "ticketing-dashboard.json").read_text())
    return [t["expr"] for p in dashboard["panels"] for t in p.get("targets", [])]


async def test_every_metric_the_alerts_and_the_dashboard_use_is_exported_by_a_running_service(stack: Stack) -> None:
    await stack.create_event(title="Metrics check")  # one request through the gateway and one command consumed
    exported: set[str] = set()
    for text in (await scrape_all(stack)).values():
        exported |= exported_names(text)

    alerts = alert_exprs()
    used = metric_names_in(alerts) | metric_names_in(dashboard_exprs())
    # The four the operators asked for: DLQ not empty, release lateness, 5xx rate, outbox backlog.
    assert {
        "ticketing_dead_letters_waiting",
        "ticketing_hold_release_lateness_seconds_bucket",
        "http_requests_total",
        "ticketing_outbox_oldest_age_seconds",
    } <= metric_names_in(alerts)
    assert used - exported - SYNTHESIZED_BY_PROMETHEUS == set()


async def test_the_gateway_counts_requests_and_the_services_count_broker_messages(stack: Stack) -> None:
    await stack.create_event(title="Broker metrics")

    async def observed() -> dict[str, str] | None:
        pages = await scrape_all(stack)
        gateway_ok = re.search(
            r'^http_requests_total\{[^}]*handler="/admin/events"[^}]*status="2xx"[^}]*\} [1-9]', pages["gateway"], re.M
        )
        inventory_consumed = re.search(
            r'^faststream_received_messages_total\{[^}]*app_name="inventory"[^}]*\} [1-9]', pages["inventory"], re.M
        )
        inventory_backlog = re.search(r'^ticketing_outbox_backlog\{schema="inventory"\} \d', pages["inventory"], re.M)
        return pages if gateway_ok and inventory_consumed and inventory_backlog else None

    await eventually(observed, timeout=15, interval=0.5, what="HTTP, broker and outbox metrics")


async def test_the_gateway_serves_the_message_contracts(stack: Stack) -> None:
    async with httpx.AsyncClient(base_url=stack.base_url, timeout=10) as c:
        doc = await c.get("/asyncapi.json")
        page = await c.get("/asyncapi")
    assert doc.status_code == 200 and doc.json()["asyncapi"].startswith("3.")
    assert "order.paid" in doc.json()["channels"] and "command.checkout" not in doc.json()["channels"]
    assert page.status_code == 200 and "text/html" in page.headers["content-type"] and "asyncapi" in page.text.lower()
