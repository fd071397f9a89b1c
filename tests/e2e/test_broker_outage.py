"""Services on a broker that is not there yet, then arrives (issue 13): they start, say why they are not ready,
serve what needs no broker, refuse a checkout at once with 503 + Retry-After, and become ready by themselves.

The broker is a RabbitMQ node this test starts on a port of its own (nothing listens there at first), so the
shared broker and the other tests are untouched."""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass
from functools import partial
from typing import Any

import httpx
import pytest
import redis.asyncio as aioredis

from services.gateway.auth import issue_token
from shared.db import create_database_if_missing, drop_database
from shared.migrate import upgrade
from shared.settings import Settings
from tests.harness import eventually, run_environment
from ticketing.broker_node import BrokerNode, free_port
from ticketing.supervisor import Supervisor


@dataclass
class Outage:
    env: dict[str, str]
    settings: Settings
    node: BrokerNode
    supervisor: Supervisor

    def url(self, service: str) -> str:
        port = {"gateway": self.settings.gateway_port, "inventory": self.settings.inventory_port}[service]
        return f"http://127.0.0.1:{port}"

    def client(self, user: str, admin: bool = False) -> httpx.AsyncClient:
        token = issue_token(self.settings, user, f"{user}@example.com", ["admin"] if admin else [])
        return httpx.AsyncClient(base_url=self.url("gateway"), headers={"Authorization": f"Bearer {token}"}, timeout=30)


@pytest.fixture
async def outage(server_settings: Settings, monkeypatch: pytest.MonkeyPatch) -> AsyncIterator[Outage]:
    node = BrokerNode.create("ticketing-outage", port=free_port())  # not started: nothing listens on its port
    env = run_environment(server_settings)
    env.update(
        {
            "TICKETING_RABBITMQ_URL": node.url,
            "TICKETING_BROKER_RETRY_INITIAL_SECONDS": "0.2",
            "TICKETING_BROKER_RETRY_MAX_SECONDS": "1",
        }
    )
    for key, value in env.items():
        if key.startswith("TICKETING_"):
            monkeypatch.setenv(key, value)
    settings = Settings()
    await create_database_if_missing(settings.database_url)
    await asyncio.to_thread(upgrade, settings.database_url)
    supervisor = Supervisor(env=env, services=("inventory", "gateway"), restart=False)
    supervisor.start()
    try:
        yield Outage(env=env, settings=settings, node=node, supervisor=supervisor)
    finally:
        supervisor.stop()
        await asyncio.to_thread(node.stop)
        r = aioredis.from_url(settings.redis_url)
        async for key in r.scan_iter(match=f"{settings.prefix}*", count=1000):
            await r.delete(key)
        await r.aclose()
        await drop_database(settings.database_url)


async def test_services_wait_for_the_broker_serving_what_needs_none_and_recover_by_themselves(
    outage: Outage,
) -> None:
    admin = issue_token(outage.settings, "operator", "operator@example.com", ["admin"])

    async def alive_not_ready(service: str) -> dict[str, Any] | None:
        # The gateway tells the reason to admins only (anonymous callers get a bare status).
        headers = {"Authorization": f"Bearer {admin}"}
        async with httpx.AsyncClient(base_url=outage.url(service), timeout=2, headers=headers) as c:
            try:
                alive, ready = await c.get("/healthz"), await c.get("/readyz")
            except httpx.HTTPError:
                return None  # still starting
        return ready.json() if alive.status_code == 200 and ready.status_code == 503 else None

    for service in ("gateway", "inventory"):
        body = await eventually(partial(alive_not_ready, service), timeout=30, what=f"{service} alive, not ready")
        assert "waiting for RabbitMQ" in body["failures"]["rabbitmq"]
        assert "database" not in body["failures"]

    async with outage.client("buyer") as c:
        assert (await c.get("/events")).status_code == 200
        assert (await c.get("/search", params={"q": "anything"})).status_code == 200
        assert (await c.get(f"/orders/{uuid.uuid4()}")).status_code == 404
        started = time.monotonic()
        r = await c.post(
            "/checkout",
            json={"items": [{"ticket_type_id": str(uuid.uuid4()), "quantity": 1}]},
            headers={"Idempotency-Key": "outage-1"},
        )
        assert time.monotonic() - started < 5  # refused at once, not a hang
    assert r.status_code == 503, r.text
    assert r.headers["content-type"].startswith("application/problem+json")
    assert int(r.headers["Retry-After"]) > 0

    await asyncio.to_thread(outage.node.start)  # the broker arrives

    async def ready(service: str) -> bool:
        async with httpx.AsyncClient(base_url=outage.url(service), timeout=2) as c:
            return (await c.get("/readyz")).status_code == 200

    for service in ("gateway", "inventory"):
        await eventually(partial(ready, service), timeout=30, what=f"{service} ready once the broker is back")

    body = {
        "title": "Back online",
        "venue": "Nhà hát Lớn",
        "city": "Hà Nội",
        "starts_at": "2030-01-01T20:00:00+07:00",
        "hold_seconds": 900,
        "ticket_types": [{"name": "A", "price": 100_000, "capacity": 5, "per_user_limit": 2}],
    }
    async with outage.client("organiser", admin=True) as c:
        created = await c.post("/admin/events", json=body)
    assert created.status_code == 201, created.text
    tt = created.json()["ticket_types"][0]["ticket_type_id"]
    async with outage.client("buyer") as c:
        held = await c.post(
            "/checkout",
            json={"items": [{"ticket_type_id": tt, "quantity": 1}]},
            headers={"Idempotency-Key": "outage-2"},
        )
    assert held.status_code == 201, held.text
    assert held.json()["status"] == "PENDING"
