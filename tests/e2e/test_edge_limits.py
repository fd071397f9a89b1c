"""Issue 8: rate limits on every public route and the bounded search read-through path, each on a gateway
process of its own (the suite's gateway runs with the limits off), sharing the run's database and broker."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from functools import partial

import httpx
import pytest

from tests.harness import Stack, eventually, free_port
from ticketing.supervisor import Supervisor

PROBLEM = "application/problem+json"
WINDOW = 60
LIMIT = 4


async def _gateway(stack: Stack, **settings: str) -> AsyncIterator[str]:
    env = {
        **stack.env,
        "TICKETING_GATEWAY_PORT": str(free_port()),
        "TICKETING_RATE_LIMIT_ENABLED": "true",
        "TICKETING_RATE_LIMIT_WINDOW_SECONDS": str(WINDOW),
        "TICKETING_RATE_LIMIT_HEALTH": "100000",
        **{f"TICKETING_{k.upper()}": v for k, v in settings.items()},
    }
    private = Supervisor(env=env, services=("gateway",), quiet=True)
    base_url = f"http://127.0.0.1:{env['TICKETING_GATEWAY_PORT']}"
    private.start()
    try:

        async def up() -> bool:
            try:
                async with httpx.AsyncClient(timeout=2) as c:
                    return (await c.get(f"{base_url}/healthz")).status_code == 200
            except httpx.HTTPError:
                return False

        await eventually(up, timeout=60, interval=0.2, what="the private gateway")
        yield base_url
    finally:
        private.stop()  # only the process this test started


@pytest.fixture(scope="module")
async def limited(stack: Stack) -> AsyncIterator[str]:
    limits = {
        name: str(LIMIT)
        for name in ("rate_limit_search", "rate_limit_catalog", "rate_limit_orders", "rate_limit_payments")
    }
    async for url in _gateway(
        stack, checkout_rate_limit=str(LIMIT), checkout_rate_window_seconds=str(WINDOW), **limits
    ):
        yield url


@pytest.fixture(scope="module")
async def without_redis(stack: Stack) -> AsyncIterator[str]:
    """Redis unreachable (a port nobody listens on); the read-through path one at a time, no waiting."""
    async for url in _gateway(
        stack,
        redis_url=f"redis://127.0.0.1:{free_port()}/0",
        rate_limit_payments=str(LIMIT),
        rate_limit_search="1000",
        rate_limit_catalog="1000",
        search_fallback_concurrency="1",
        search_fallback_queue_seconds="0",
    ):
        yield url


def client(stack: Stack, base_url: str, user: str) -> httpx.AsyncClient:
    return httpx.AsyncClient(base_url=base_url, headers={"Authorization": f"Bearer {stack.token(user)}"}, timeout=30)


async def until_limited(send: Callable[[], Awaitable[httpx.Response]], allowed: int) -> httpx.Response:
    """The first answer must pass; a 429 must come within 2 * allowed + 1 requests (a fixed window can roll over
    once during the burst, so one window holds more than ``allowed`` of them)."""
    first = await send()
    assert first.status_code != 429, first.text
    for _ in range(2 * allowed):
        r = await send()
        if r.status_code == 429:
            assert r.headers["content-type"] == PROBLEM and r.json()["type"].endswith("/rate-limited")
            assert 1 <= int(r.headers["retry-after"]) <= WINDOW
            return r
        assert r.status_code < 500, r.text
    raise AssertionError(f"no 429 within {2 * allowed + 1} requests")


async def test_every_public_route_answers_429_with_retry_after(stack: Stack, limited: str) -> None:
    event = await stack.create_event(capacity=5)
    detail = f"/events/{event['event_id']}"
    async with httpx.AsyncClient(base_url=limited, timeout=30) as c:
        await until_limited(lambda: c.get("/search", params={"q": "flash"}), LIMIT)
        # The homepage and event details share one budget per client address; so do the IPN and the return
        # URL (VNPAY's servers call both).
        for first, then in (("/events", detail), ("/payments/vnpay/ipn", "/payments/vnpay/return")):
            await until_limited(partial(c.get, first, params={"vnp_TxnRef": "x"}), LIMIT)
            r = await c.get(then, params={"vnp_TxnRef": "x"})
            assert r.status_code == 429 and int(r.headers["retry-after"]) >= 1


async def test_order_reads_and_checkout_are_limited_per_token_subject(stack: Stack, limited: str) -> None:
    event = await stack.create_event(capacity=50)
    tt = event["ticket_types"][0]["ticket_type_id"]
    order = f"/orders/{uuid.uuid4()}"
    async with client(stack, limited, "greedy-reader") as greedy, client(stack, limited, "patient-reader") as patient:
        await until_limited(lambda: greedy.get(order), LIMIT)
        assert (await patient.get(order)).status_code == 404  # another subject has its own budget
        r = await until_limited(
            lambda: greedy.post("/checkout", json={"items": [{"ticket_type_id": tt, "quantity": 1}]}), LIMIT
        )
        assert r.status_code == 429
        held = await patient.post("/checkout", json={"items": [{"ticket_type_id": tt, "quantity": 1}]})
        assert held.status_code == 201, held.text


async def test_with_redis_down_the_limits_still_hold_and_readyz_tells_nothing(stack: Stack, without_redis: str) -> None:
    async with httpx.AsyncClient(base_url=without_redis, timeout=30) as c:
        await until_limited(lambda: c.get("/payments/vnpay/ipn", params={"vnp_TxnRef": "x"}), LIMIT)
        anonymous = await c.get("/readyz")
        assert anonymous.status_code == 503 and anonymous.json() == {"status": "unavailable"}
        admin = {"Authorization": f"Bearer {stack.token('operator', admin=True)}"}
        detailed = await c.get("/readyz", headers=admin)
        assert detailed.status_code == 503 and set(detailed.json()["failures"]) == {"redis"}


async def test_the_read_through_path_is_bounded_and_sheds_with_503(stack: Stack, without_redis: str) -> None:
    await stack.create_event(capacity=5, title="Read through")
    async with httpx.AsyncClient(base_url=without_redis, timeout=30) as c:
        page = await c.get("/search", params={"q": ""})
        assert page.status_code == 200 and page.json()["source"] == "database" and page.json()["total"] >= 1
        async with stack.db.acquire() as conn, conn.transaction():
            # Hold the database path: the first search waits on this lock inside the gateway.
            await conn.execute("LOCK TABLE inventory.events IN ACCESS EXCLUSIVE MODE")
            blocked = asyncio.ensure_future(c.get("/search", params={"q": ""}))

            async def waiting_on_lock() -> bool:
                return bool(
                    await stack.db.fetchval(
                        "SELECT count(*) FROM pg_stat_activity WHERE wait_event_type = 'Lock' "
                        "AND datname = current_database() AND query LIKE '%read_api.searchable_events%'"
                    )
                )

            await eventually(waiting_on_lock, what="the first search to wait for the database")
            for path in ("/search", "/events"):
                shed = await c.get(path)
                assert shed.status_code == 503, shed.text
                assert shed.headers["content-type"] == PROBLEM and int(shed.headers["retry-after"]) >= 1
            assert (await c.get("/healthz")).status_code == 200  # the event loop is free meanwhile
        first = await blocked
        assert first.status_code == 200 and first.json()["source"] == "database"
