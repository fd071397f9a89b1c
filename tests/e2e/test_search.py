"""Search and caching end to end: admin API -> inventory -> catalog events -> search service -> Redis index,
read back through the gateway. Real processes, real PostgreSQL, RabbitMQ and Redis."""

from __future__ import annotations

import asyncio
import contextlib
import re
import signal
import subprocess
import uuid
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import pytest
import redis.asyncio as aioredis

from shared.db import make_engine
from shared.search_index import domain
from shared.search_index import store as search_store
from shared.topology import Names, all_queue_names
from tests.harness import Stack, eventually, free_port, metric
from ticketing.supervisor import Supervisor

NOW = datetime.now(UTC).replace(microsecond=0)


def tag() -> str:
    return "t" + uuid.uuid4().hex[:8]


def at(days: float) -> str:
    return (NOW + timedelta(days=days)).isoformat()


async def create(
    stack: Stack, title: str, city: str, days: float, types: list[tuple[str, int, int]], venue: str = "Nhà hát Lớn"
) -> dict[str, Any]:
    body = {
        "title": title,
        "venue": venue,
        "city": city,
        "starts_at": at(days),
        "ticket_types": [{"name": n, "price": p, "capacity": c} for n, p, c in types],
    }
    async with stack.client("organiser", admin=True) as c:
        r = await c.post("/admin/events", json=body)
    assert r.status_code == 201, r.text
    assert r.json()["searchable"] is True and r.headers["x-searchable"] == "true"
    return r.json()  # type: ignore[no-any-return]


async def search(base_url: str, **params: Any) -> dict[str, Any]:
    async with httpx.AsyncClient(base_url=base_url, timeout=30) as c:
        r = await c.get("/search", params={k: v for k, v in params.items() if v is not None})
    assert r.status_code == 200, r.text
    assert r.headers["x-search-source"] == r.json()["source"]
    return r.json()  # type: ignore[no-any-return]


def titles(page: dict[str, Any]) -> list[str]:
    return [h["title"] for h in page["results"]]


@pytest.fixture(scope="module")
async def catalog(stack: Stack) -> AsyncIterator[tuple[str, dict[str, str]]]:
    """Five events in a city of their own (other tests' events never match the city filter)."""
    city = f"Hội An {tag()}"
    ids = {}
    for title, days, types in [
        ("Múa rối nước Thăng Long", 3, [("Thường", 200_000, 10)]),
        ("Mua roi nuoc ban khong dau", 2, [("Thường", 100_000, 10)]),
        ("Đêm nhạc Trịnh", 1, [("VIP", 800_000, 0)]),
        ("Rock Đà Nẵng", 4, [("Phổ thông", 300_000, 5)]),
        ("Múa rối đã diễn", -1, [("Thường", 100_000, 10)]),
    ]:
        ids[title] = (await create(stack, title, city, days, types))["event_id"]
    yield city, ids


A, B, C, D = "Múa rối nước Thăng Long", "Mua roi nuoc ban khong dau", "Đêm nhạc Trịnh", "Rock Đà Nẵng"


@pytest.mark.parametrize(
    ("q", "expected"),
    [
        ("múa rối nước", [A, B]),  # typed with accents: the exact-accent title first, although later
        ("mua roi nuoc", [B, A]),  # no accents typed: soonest first
        ("MÚA RỐI", [A, B]),
        ("mua roi nu", [B, A]),  # the last word is a prefix (search as you type)
        ("roinuoc", [B, A]),  # missing space
        ("muaroinuoc thang", [A]),
        ("da nang", [D]),
        ("danang", [D]),
        ("trin", [C]),
        ("pho thong", [D]),  # ticket type names are searchable
        ("nha hat lon", [C, B, A, D]),  # the venue too
        ("mu roi", []),  # only the last word is a prefix
        ("xyzzy", []),
    ],
)
async def test_accent_prefix_and_missing_space_queries_find_the_events_in_order(
    stack: Stack, catalog: tuple[str, dict[str, str]], q: str, expected: list[str]
) -> None:
    city, _ = catalog
    page = await search(stack.base_url, q=q, city=city)
    assert page["source"] == "index"
    assert titles(page) == expected
    assert page["total"] == len(expected)
    if expected:
        first = page["results"][0]
        assert set(first) >= {"event_id", "title", "venue", "city", "starts_at", "lowest_price", "available"}


async def test_filters_and_paging(stack: Stack, catalog: tuple[str, dict[str, str]]) -> None:
    city, ids = catalog
    everything = await search(stack.base_url, city=city)
    assert titles(everything) == [C, B, A, D]  # upcoming only, soonest first; the past event is not listed
    assert titles(await search(stack.base_url, city=city.upper())) == [C, B, A, D]
    assert titles(await search(stack.base_url, city=city, available="true")) == [B, A, D]  # C has no tickets
    assert titles(await search(stack.base_url, city=city, min_price=150_000, max_price=500_000)) == [A, D]
    assert titles(await search(stack.base_url, q="mua", city=city, max_price=150_000)) == [B]
    window = await search(stack.base_url, city=city, **{"from": at(1.5), "to": at(3.5)})
    assert titles(window) == [B, A]
    past = await search(stack.base_url, q="mua roi", city=city, **{"from": at(-2)})
    assert titles(past) == ["Múa rối đã diễn", B, A]
    p1 = await search(stack.base_url, city=city, page_size=3)
    p2 = await search(stack.base_url, city=city, page_size=3, page=2)
    assert (p1["total"], p1["pages"], titles(p1), titles(p2)) == (4, 2, [C, B, A], [D])
    hit = {h["title"]: h for h in everything["results"]}
    assert hit[A]["lowest_price"] == 200_000 and hit[A]["available"] == 10 and hit[A]["event_id"] == ids[A]
    assert hit[C]["available"] == 0


async def test_the_read_through_path_gives_the_same_answers(stack: Stack, catalog: tuple[str, dict[str, str]]) -> None:
    """PostgreSQL's path (used while the index is missing) against the index, query by query."""
    city, _ = catalog
    engine = make_engine(stack.settings.database_url, pool_size=1)
    try:
        for q in ["múa rối nước", "mua roi nuoc", "roinuoc", "mua roi nu", "danang", "trin", "pho thong", ""]:
            extras: list[dict[str, Any]] = [{}, {"available_only": True}, {"min_price": 150_000}]
            for extra in extras:
                filters = domain.Filters(city=city, **extra)
                from_db = await search_store.search(engine, domain.parse(q), filters, 0, 50)
                params = {
                    "q": q,
                    "city": city,
                    "available": "true" if extra.get("available_only") else None,
                    "min_price": extra.get("min_price"),
                }
                from_index = await search(stack.base_url, **params)
                assert [str(h.doc.event_id) for h in from_db.hits] == [h["event_id"] for h in from_index["results"]]
                assert from_db.total == from_index["total"]
    finally:
        await engine.dispose()


async def test_a_ticket_type_added_is_searchable_when_the_call_returns_and_leaves_available_when_sold_out(
    stack: Stack,
) -> None:
    city = f"Huế {tag()}"
    event = await create(stack, "Hòa nhạc mùa thu", city, 5, [])
    assert (await search(stack.base_url, q="early bird", city=city))["total"] == 0
    async with stack.client("organiser", admin=True) as c:
        r = await c.post(
            f"/admin/events/{event['event_id']}/ticket-types",
            json={"name": "Early bird", "price": 150_000, "capacity": 2},
        )
    assert r.status_code == 201 and r.json()["searchable"] is True
    # no polling: the admin call returned, so the index has it
    page = await search(stack.base_url, q="early bi", city=city, available="true")
    assert titles(page) == ["Hòa nhạc mùa thu"]
    assert page["results"][0]["lowest_price"] == 150_000 and page["results"][0]["available"] == 2
    homepage = await _homepage(stack)
    assert event["event_id"] in homepage

    async with stack.client("fan") as c:
        bought = await c.post(
            "/checkout", json={"items": [{"ticket_type_id": r.json()["ticket_type_id"], "quantity": 2}]}
        )
    assert bought.status_code == 201, bought.text

    async def gone_from_available() -> bool:
        return (await search(stack.base_url, q="early bird", city=city, available="true"))["total"] == 0

    await eventually(gone_from_available, timeout=10, what="sold-out event to leave available=true results")
    still = await search(stack.base_url, q="early bird", city=city)
    assert titles(still) == ["Hòa nhạc mùa thu"] and still["results"][0]["available"] == 0


async def _homepage(stack: Stack) -> dict[str, dict[str, Any]]:
    async with httpx.AsyncClient(base_url=stack.base_url) as c:
        r = await c.get("/events", params={"limit": 100})
    assert r.status_code == 200
    return {e["event_id"]: e for e in r.json()}


async def test_event_detail_is_never_stale_after_a_change_and_follows_stock(stack: Stack) -> None:
    city = f"Cần Thơ {tag()}"
    event = await create(stack, "Đờn ca tài tử", city, 6, [("Thường", 100_000, 5)])
    eid = event["event_id"]
    async with httpx.AsyncClient(base_url=stack.base_url) as anon:
        first = (await anon.get(f"/events/{eid}")).json()
        cached = (await anon.get(f"/events/{eid}")).json()
        assert first == cached and len(first["ticket_types"]) == 1
        async with stack.client("organiser", admin=True) as admin:
            added = await admin.post(
                f"/admin/events/{eid}/ticket-types", json={"name": "VIP", "price": 500_000, "capacity": 3}
            )
        assert added.status_code == 201
        after = (await anon.get(f"/events/{eid}")).json()
        assert sorted(t["name"] for t in after["ticket_types"]) == ["Thường", "VIP"]
        tt = next(t["ticket_type_id"] for t in after["ticket_types"] if t["name"] == "Thường")
        async with stack.client("buyer-detail") as buyer:
            assert (
                await buyer.post("/checkout", json={"items": [{"ticket_type_id": tt, "quantity": 2}]})
            ).status_code == 201

        async def availability_followed() -> bool:
            detail = (await anon.get(f"/events/{eid}")).json()
            return next(t["available"] for t in detail["ticket_types"] if t["ticket_type_id"] == tt) == 3

        await eventually(availability_followed, timeout=10, what="cached availability to follow the stock event")

    async def homepage_followed() -> bool:
        entry = (await _homepage(stack))[eid]
        return entry["available"] == 3 + 3 and entry["lowest_price"] == 100_000

    await eventually(homepage_followed, timeout=10, what="the homepage to follow the stock event")


async def test_concurrent_cache_misses_rebuild_the_detail_once(stack: Stack) -> None:
    event = await create(stack, "Cải lương Tô Ánh Nguyệt", f"Vinh {tag()}", 7, [("Thường", 100_000, 5)])
    url = f"http://127.0.0.1:{stack.settings.gateway_port}/metrics"
    loads = 'ticketing_cache_loads_total{cache="event_detail"}'
    admin = stack.token("metrics-reader", admin=True)  # the gateway's /metrics is for admins only
    before = await metric(url, loads, admin)
    async with httpx.AsyncClient(base_url=stack.base_url, timeout=30) as c:
        responses = await asyncio.gather(*(c.get(f"/events/{event['event_id']}") for _ in range(40)))
    assert {r.status_code for r in responses} == {200}
    assert len({r.text for r in responses}) == 1
    assert await metric(url, loads, admin) - before == 1


async def test_reindex_command_switches_generations_without_losing_results(
    stack: Stack, catalog: tuple[str, dict[str, str]]
) -> None:
    city, _ = catalog
    before = await search(stack.base_url, q="mua roi", city=city)
    code, out, err = await stack.run_cli("search", "reindex")
    assert code == 0, err
    assert re.search(r"indexed \d+ events into generation g", out)
    after = await search(stack.base_url, q="mua roi", city=city)
    assert after["source"] == "index" and after["results"] == before["results"]


async def test_with_the_search_service_down_the_admin_call_says_not_yet_searchable_then_it_catches_up(
    stack: Stack,
) -> None:
    city = f"Quy Nhơn {tag()}"
    event = await create(stack, "Lễ hội ánh sáng", city, 9, [])
    stack.supervisor.stop_service("search")
    try:
        async with stack.client("organiser", admin=True) as c:
            r = await c.post(
                f"/admin/events/{event['event_id']}/ticket-types",
                json={"name": "Đêm bế mạc", "price": 90_000, "capacity": 4},
            )
        assert r.status_code == 201  # the change is committed either way
        assert r.json()["searchable"] is False and r.headers["x-searchable"] == "false"
        assert (await search(stack.base_url, q="be mac", city=city))["total"] == 0
    finally:
        stack.supervisor.start_service("search")
    await stack.wait_ready()

    async def caught_up() -> bool:
        return titles(await search(stack.base_url, q="be mac", city=city)) == ["Lễ hội ánh sáng"]

    await eventually(caught_up, timeout=30, what="the queued catalog event to reach the index")


async def test_after_flushall_search_answers_from_postgresql_and_the_index_rebuilds_itself(
    stack: Stack, catalog: tuple[str, dict[str, str]]
) -> None:
    """FLUSHALL only on a Redis this test starts for itself, with its own search service and gateway."""
    city, _ = catalog
    expected = titles(await search(stack.base_url, q="mua roi", city=city))
    port = free_port()
    redis_proc = await asyncio.create_subprocess_exec(
        "redis-server",
        "--port",
        str(port),
        "--bind",
        "127.0.0.1",
        "--save",
        "",
        "--appendonly",
        "no",
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    prefix = f"{stack.settings.prefix}flush."
    env = {
        **stack.env,
        "TICKETING_REDIS_URL": f"redis://127.0.0.1:{port}/0",
        "TICKETING_PREFIX": prefix,
        "TICKETING_GATEWAY_PORT": str(free_port()),
        "TICKETING_SEARCH_PORT": str(free_port()),
    }
    private = Supervisor(env=env, services=("search", "gateway"), quiet=True)
    base_url = f"http://127.0.0.1:{env['TICKETING_GATEWAY_PORT']}"
    r = aioredis.from_url(env["TICKETING_REDIS_URL"])
    try:

        async def redis_up() -> bool:
            try:
                return bool(await r.ping())
            except aioredis.ConnectionError:
                return False

        await eventually(redis_up, what="private redis-server")
        private.start()

        async def answered_by_index() -> bool:
            try:
                page = await search(base_url, q="mua roi", city=city)
            except httpx.HTTPError:
                return False
            return page["source"] == "index" and titles(page) == expected

        await eventually(answered_by_index, timeout=60, interval=0.2, what="the private index")
        private.procs["search"].send_signal(signal.SIGSTOP)  # hold the rebuild back: PostgreSQL must answer
        try:
            await r.flushall()
            page = await search(base_url, q="mua roi", city=city)
            assert page["source"] == "database" and titles(page) == expected
            homepage = await httpx.AsyncClient(base_url=base_url).get("/events", params={"limit": 5})
            assert homepage.status_code == 200 and len(homepage.json()) >= 1
        finally:
            private.procs["search"].send_signal(signal.SIGCONT)
        await eventually(answered_by_index, timeout=30, interval=0.1, what="the index to rebuild itself")
        rebuilds = await metric(
            f"http://127.0.0.1:{env['TICKETING_SEARCH_PORT']}/metrics",
            'ticketing_search_rebuilds_total{reason="missing"}',
        )
        assert rebuilds >= 2  # at start (empty Redis) and after FLUSHALL
    finally:
        private.stop()
        await r.aclose()
        redis_proc.terminate()  # only the process this test started, by its pid
        await asyncio.wait_for(redis_proc.wait(), 10)
        channel = await stack.amqp.channel()
        for name in all_queue_names(Names(prefix)):
            try:
                await channel.queue_delete(name)
            except Exception:
                channel = await stack.amqp.channel()
        with contextlib.suppress(Exception):
            await channel.exchange_delete(Names(prefix).events_exchange)
