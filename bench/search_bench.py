"""Search benchmark: 100,000 events in a database and a key prefix of its own, cleaned up afterwards.

Measures, and prints as a table:
  * GET /search latency at the gateway (p50/p99) for one-word, multi-word, prefix and missing-space queries;
  * the same queries inside the index (Index.search from this process: the Redis round trips and commands);
  * the same queries through PostgreSQL's read-through path, and the ratio;
  * index memory (MEMORY USAGE over the generation's keys);
  * time from an admin change (new event, new ticket type) to searchable;
  * full reindex time.

    .venv/bin/python -m bench.search_bench [--events 100000] [--requests 300]
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import platform
import random
import time
import uuid
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime, timedelta
from typing import Any

import asyncpg
import httpx
import redis.asyncio as aioredis
from sqlalchemy.engine import make_url

from services.gateway.auth import issue_token
from services.search import rebuild
from shared.db import create_database_if_missing, drop_database, make_engine
from shared.migrate import upgrade
from shared.search_index import domain, store
from shared.search_index.index import Index
from shared.settings import Settings
from shared.topology import Names, all_queue_names
from tests.harness import free_port
from ticketing.supervisor import Supervisor

GENRES = [
    "Múa rối nước",
    "Đêm nhạc",
    "Hòa nhạc giao hưởng",
    "Kịch nói",
    "Cải lương",
    "Rock",
    "Jazz",
    "Hài độc thoại",
    "Triển lãm",
    "Nhạc kịch",
    "Ballet",
    "Opera",
    "Lễ hội ẩm thực",
    "Xiếc",
    "Tuồng",
    "Chèo",
    "Quan họ",
    "Ca trù",
    "Đờn ca tài tử",
    "Hip hop",
    "EDM",
    "Acoustic",
    "Bolero",
    "Nhạc trẻ",
    "Thời trang",
    "Hội thảo",
    "Marathon",
    "Bóng đá",
    "Workshop",
    "Stand-up comedy",
    "Điện ảnh",
    "Thiếu nhi",
    "Ảo thuật",
    "Piano",
    "Violin",
    "Guitar",
    "K-pop",
    "Indie",
    "Blues",
    "Nhạc Trịnh",
]
SYLLABLE_TEXT = (
    "an anh bảo bình cao châu chi công cường dũng dương đạt điệp đông đức giang hà hải hạnh hào hiền "
    "hiếu hoa hoài hoàng hồng huệ hùng hương huy khang khánh khoa kiên lam lan linh loan long mai minh my "
    "nam nga ngân ngọc nguyên nhân nhi nhung oanh phát phong phúc phương quang quân quế quốc quyên sang "
    "sơn tâm tân thanh thảo thắng thịnh thu thủy tiến toàn trang trí trinh trung tú tuấn tùng tuyết uyên "
    "vân việt vinh vũ xuân yến"
)
SYLLABLES = SYLLABLE_TEXT.split(" ")
CITIES = [
    "Hà Nội",
    "TP. Hồ Chí Minh",
    "Đà Nẵng",
    "Huế",
    "Hải Phòng",
    "Cần Thơ",
    "Nha Trang",
    "Đà Lạt",
    "Vũng Tàu",
    "Quy Nhơn",
    "Hội An",
    "Hạ Long",
    "Vinh",
    "Buôn Ma Thuột",
    "Phú Quốc",
]
VENUE_KINDS = ["Nhà hát", "Cung văn hóa", "Sân vận động", "Trung tâm hội nghị", "Phòng trà", "Công viên", "Bảo tàng"]
TYPE_NAMES = ["Thường", "VIP", "Phổ thông", "Early bird", "Sinh viên", "Hạng A", "Hạng B", "Khán đài", "SVIP"]

QUERIES = {
    "one-word": ["jazz", "xiếc", "opera", "bolero", "piano", "tuong"],
    "multi-word": ["mua roi nuoc", "hòa nhạc giao hưởng", "dem nhac ha noi", "cai luong hue"],
    "prefix": ["giao hu", "mua roi n", "bole", "nhac kic"],
    "missing-space": ["roinuoc", "giaohuong", "danang", "caiLuong"],
}


def pct(values: list[float], p: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(p / 100 * (len(ordered) - 1)))]


def ms(v: float) -> str:
    return f"{v * 1000:.2f}"


async def load_catalog(dsn: str, n: int, seed: int = 5) -> None:
    rnd = random.Random(seed)
    now = datetime.now(UTC)
    venues = [
        f"{rnd.choice(VENUE_KINDS)} {rnd.choice(SYLLABLES).title()} {rnd.choice(SYLLABLES).title()}" for _ in range(400)
    ]
    events, types = [], []
    for _ in range(n):
        eid = uuid.UUID(int=rnd.getrandbits(128))
        artist = " ".join(rnd.choice(SYLLABLES).title() for _ in range(rnd.randint(1, 3)))
        title = f"{rnd.choice(GENRES)} {artist}" + (f" {rnd.randint(2026, 2030)}" if rnd.random() < 0.3 else "")
        starts = now + timedelta(minutes=rnd.randint(-30 * 24 * 60, 365 * 24 * 60))
        events.append((eid, title, rnd.choice(venues), rnd.choice(CITIES), starts, "", 900, now, now))
        for name in rnd.sample(TYPE_NAMES, rnd.randint(1, 4)):
            cap = rnd.choice([0, 50, 100, 500])
            types.append(
                (
                    uuid.UUID(int=rnd.getrandbits(128)),
                    eid,
                    name,
                    rnd.choice([0, 99_000, 250_000, 1_500_000]),
                    cap,
                    10,
                    0,
                    0,
                    now,
                )
            )
    conn = await asyncpg.connect(dsn)
    try:
        await conn.copy_records_to_table(
            "events",
            schema_name="inventory",
            records=events,
            columns=[
                "id",
                "title",
                "venue",
                "city",
                "starts_at",
                "description",
                "hold_seconds",
                "created_at",
                "updated_at",
            ],
        )
        await conn.copy_records_to_table(
            "ticket_types",
            schema_name="inventory",
            records=types,
            columns=["id", "event_id", "name", "price", "capacity", "per_user_limit", "held", "sold", "created_at"],
        )
        await conn.execute("ANALYZE")
    finally:
        await conn.close()


async def server_buckets(client: httpx.AsyncClient, settings: Settings) -> dict[float, float]:
    """The gateway's own GET /search histogram (source=index): cumulative counts per bucket bound."""
    out: dict[float, float] = {}
    admin = issue_token(settings, "bench-admin", "admin@example.com", ["admin"])
    page = await client.get("/metrics", headers={"Authorization": f"Bearer {admin}"})  # admins only (SECURITY.md)
    for line in page.text.splitlines():
        if line.startswith("ticketing_search_seconds_bucket") and 'source="index"' in line:
            le = line.split('le="', 1)[1].split('"', 1)[0]
            out[float(le)] = float(line.rsplit(" ", 1)[1])
    return out


def server_p99(before: dict[float, float], after: dict[float, float]) -> str:
    """The smallest histogram bound under which 99% of this run's requests finished (server side)."""
    total = after.get(float("inf"), 0) - before.get(float("inf"), 0)
    for le in sorted(after):
        if total and (after[le] - before.get(le, 0)) / total >= 0.99:
            return "<= " + ("inf" if le == float("inf") else f"{le * 1000:g}")
    return "n/a"


async def timed(fn: Callable[[], Awaitable[Any]], n: int) -> list[float]:
    out = []
    for _ in range(n):
        t = time.perf_counter()
        await fn()
        out.append(time.perf_counter() - t)
    return out


async def index_memory(r: aioredis.Redis, index: Index, gen: str) -> tuple[int, int]:
    total = keys = 0
    async for key in r.scan_iter(match=index.keys(gen).pattern(), count=5000):
        total += int(await r.memory_usage(key) or 0)
        keys += 1
    return total, keys


async def main(n_events: int, n_requests: int) -> None:
    base = Settings()  # type: ignore[call-arg]
    run = uuid.uuid4().hex[:8]
    db_url = (
        make_url(base.database_url).set(database=f"ticketing_bench_search_{run}").render_as_string(hide_password=False)
    )
    prefix = f"bench-search-{run}."
    env = {
        **os.environ,
        "TICKETING_DATABASE_URL": db_url,
        "TICKETING_PREFIX": prefix,
        "TICKETING_ENVIRONMENT": "test",
        "TICKETING_JWT_SECRET": f"bench-{uuid.uuid4().hex}",
        "TICKETING_GATEWAY_PORT": str(free_port()),
        "TICKETING_INVENTORY_PORT": str(free_port()),
        "TICKETING_SEARCH_PORT": str(free_port()),
        "TICKETING_PAYMENT_PORT": str(free_port()),
        "TICKETING_MAILER_PORT": str(free_port()),
        "TICKETING_LOG_LEVEL": "WARNING",
        "TICKETING_CHECKOUT_WAIT_SECONDS": "30",
        # One client address sends every request: the per-address limits would measure themselves.
        "TICKETING_RATE_LIMIT_ENABLED": "false",
    }
    settings = Settings(database_url=db_url, prefix=prefix, jwt_secret=env["TICKETING_JWT_SECRET"])  # type: ignore[call-arg,arg-type]
    names = Names(prefix)
    r = aioredis.from_url(base.redis_url)
    await create_database_if_missing(db_url)
    supervisor: Supervisor | None = None
    engine = make_engine(db_url, pool_size=4)
    rows: list[tuple[str, ...]] = []
    try:
        upgrade(db_url)
        t = time.perf_counter()
        await load_catalog(
            make_url(db_url).set(drivername="postgresql").render_as_string(hide_password=False), n_events
        )
        print(f"loaded {n_events} events into PostgreSQL in {time.perf_counter() - t:.1f} s", flush=True)

        index = Index(r, names)
        report = await rebuild.rebuild(index, engine, reason="bench")
        assert report is not None
        gen = report.generation
        memory, keys = await index_memory(r, index, gen)
        print(
            f"reindex {report.events} events: {report.seconds:.1f} s; {memory / 2**20:.1f} MiB in {keys} keys",
            flush=True,
        )

        supervisor = Supervisor(env=env, services=("inventory", "search", "gateway"), quiet=True)
        supervisor.start()
        gw = f"http://127.0.0.1:{env['TICKETING_GATEWAY_PORT']}"
        async with httpx.AsyncClient(base_url=gw, timeout=30) as client:
            for _ in range(600):
                try:
                    if (await client.get("/readyz")).status_code == 200:
                        break
                except httpx.HTTPError:
                    pass
                await asyncio.sleep(0.1)
            now = datetime.now(UTC)
            for kind, queries in QUERIES.items():
                matches = []
                for q in queries:
                    res = (await client.get("/search", params={"q": q})).json()
                    assert res["source"] == "index", res
                    matches.append(res["total"])
                    for _ in range(5):  # warm up
                        await client.get("/search", params={"q": q})
                it = iter(range(10**9))

                async def via_gateway(queries: list[str] = queries, it: Any = it) -> None:
                    q = queries[next(it) % len(queries)]
                    resp = await client.get("/search", params={"q": q})
                    assert resp.status_code == 200

                async def via_index(queries: list[str] = queries, it: Any = it) -> None:
                    q = queries[next(it) % len(queries)]
                    await index.search(gen, domain.parse(q), domain.Filters(), 0, 20, now=now)

                async def via_db(queries: list[str] = queries, it: Any = it) -> None:
                    q = queries[next(it) % len(queries)]
                    await store.search(engine, domain.parse(q), domain.Filters(), 0, 20, now=now)

                b0 = await server_buckets(client, settings)
                gw_t = await timed(via_gateway, n_requests)
                b1 = await server_buckets(client, settings)
                stats0 = (await r.info("commandstats")).get("cmdstat_evalsha", {})
                ix_t = await timed(via_index, n_requests)
                stats1 = (await r.info("commandstats")).get("cmdstat_evalsha", {})
                calls = stats1.get("calls", 0) - stats0.get("calls", 0)
                redis_us = (stats1.get("usec", 0) - stats0.get("usec", 0)) / calls if calls else 0.0
                db_t = await timed(via_db, max(len(queries) * 2, n_requests // 30))
                rows.append(
                    (
                        kind,
                        ", ".join(queries),
                        f"{min(matches)}-{max(matches)}",
                        ms(pct(gw_t, 50)),
                        ms(pct(gw_t, 99)),
                        server_p99(b0, b1),
                        ms(pct(ix_t, 50)),
                        ms(pct(ix_t, 99)),
                        f"{redis_us / 1000:.2f}",
                        ms(pct(db_t, 50)),
                        ms(pct(db_t, 99)),
                        f"{pct(db_t, 50) / pct(gw_t, 50):.0f}x",
                    )
                )
                print(rows[-1], flush=True)

            # Freshness: admin change -> searchable (the call's own answer, and an independent poller).
            token = issue_token(settings, "bench-admin", "admin@example.com", ["admin"])
            headers = {"Authorization": f"Bearer {token}"}
            create_t, first_hit_t, add_t = [], [], []
            for i in range(40):
                # Every fourth change also has an independent poller searching for it; the poller's requests
                # compete with the POST for the gateway, so those POSTs are not counted in create_t.
                with_poller = i % 4 == 0
                word = f"fresh{run}{i}x"
                body = {
                    "title": f"Sự kiện {word}",
                    "venue": "Nhà hát Lớn",
                    "city": "Hà Nội",
                    "starts_at": (datetime.now(UTC) + timedelta(days=3)).isoformat(),
                    "ticket_types": [{"name": "Thường", "price": 100_000, "capacity": 10}],
                }
                found = asyncio.Event()
                started = time.perf_counter()
                seen: list[float] = []

                async def poll(
                    word: str = word, found: asyncio.Event = found, seen: list[float] = seen, started: float = started
                ) -> None:
                    async with httpx.AsyncClient(base_url=gw, timeout=30) as poller:
                        while not found.is_set():
                            res = (await poller.get("/search", params={"q": word})).json()
                            if res["total"] and res["source"] == "index":
                                seen.append(time.perf_counter() - started)
                                found.set()
                            await asyncio.sleep(0.002)

                poller = asyncio.create_task(poll()) if with_poller else None
                resp = await client.post("/admin/events", json=body, headers=headers)
                elapsed = time.perf_counter() - started
                assert resp.status_code == 201 and resp.json()["searchable"], resp.text
                if poller is not None:
                    await asyncio.wait_for(poller, 10)
                    first_hit_t.append(seen[0])
                else:
                    create_t.append(elapsed)
                t0 = time.perf_counter()
                added = await client.post(
                    f"/admin/events/{resp.json()['event_id']}/ticket-types",
                    headers=headers,
                    json={"name": f"Hạng {word}", "price": 50_000, "capacity": 5},
                )
                add_t.append(time.perf_counter() - t0)
                assert added.status_code == 201 and added.json()["searchable"], added.text
        print()
        header = (
            "query kind",
            "queries",
            "matches",
            "HTTP client p50 ms",
            "HTTP client p99 ms",
            "gateway handler p99 ms (histogram)",
            "index call p50 ms",
            "index call p99 ms",
            "Redis server mean ms (commandstats)",
            "PostgreSQL p50 ms",
            "PostgreSQL p99 ms",
            "PG/gateway p50",
        )
        print(" | ".join(header))
        print(" | ".join("---" for _ in header))
        for row in rows:
            print(" | ".join(row))
        print()
        print(
            f"admin POST /admin/events -> returns searchable=true: p50 {ms(pct(create_t, 50))} ms, "
            f"p99 {ms(pct(create_t, 99))} ms"
        )
        print(
            f"admin POST start -> first search hit (independent poller): p50 {ms(pct(first_hit_t, 50))} ms, "
            f"p99 {ms(pct(first_hit_t, 99))} ms"
        )
        print(
            f"admin POST ticket type -> returns searchable=true: p50 {ms(pct(add_t, 50))} ms, "
            f"p99 {ms(pct(add_t, 99))} ms"
        )
        print(
            f"full reindex of {report.events} events: {report.seconds:.1f} s; index memory {memory / 2**20:.1f} MiB "
            f"in {keys} keys"
        )
        print(
            f"machine: {platform.node()} {platform.machine()}, {os.cpu_count()} cores, Python "
            f"{platform.python_version()}; command: python -m bench.search_bench --events {n_events} "
            f"--requests {n_requests}"
        )
    finally:
        if supervisor:
            supervisor.stop()
        await engine.dispose()
        async for key in r.scan_iter(match=f"{prefix}*", count=5000):
            await r.unlink(key)
        await r.aclose()
        await drop_database(db_url)
        await delete_queues(base.rabbitmq_url, names)


async def delete_queues(url: str, names: Names) -> None:
    import aio_pika

    conn = await aio_pika.connect_robust(url)
    try:
        channel = await conn.channel()
        for name in all_queue_names(names, (900,)):
            try:
                await channel.queue_delete(name)
            except Exception:
                channel = await conn.channel()
        with contextlib.suppress(Exception):
            await channel.exchange_delete(names.events_exchange)
    finally:
        await conn.close()


if __name__ == "__main__":
    parser = argparse.ArgumentParser()
    parser.add_argument("--events", type=int, default=100_000)
    parser.add_argument("--requests", type=int, default=300)
    args = parser.parse_args()
    asyncio.run(main(args.events, args.requests))
