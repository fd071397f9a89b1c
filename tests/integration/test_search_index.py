"""The Redis index against the in-memory oracle (shared.search_index.domain): same hits, same order, for
generated catalogs and queries. Real Redis, this test's own key prefix, cleaned up after."""

from __future__ import annotations

import random
import uuid
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta

import pytest
import redis.asyncio as aioredis

from shared.search_index import domain
from shared.search_index.domain import Doc, Filters
from shared.search_index.index import Index, new_generation
from shared.topology import Names

NOW = datetime(2030, 1, 1, tzinfo=UTC)
WORDS = [
    "Múa",
    "rối",
    "nước",
    "Đêm",
    "nhạc",
    "Trịnh",
    "Hà",
    "Nội",
    "Rock",
    "Jazz",
    "Hài",
    "kịch",
    "Sài",
    "Gòn",
    "mua",
    "roi",
    "nuoc",
    "Thăng",
    "Long",
    "Hòa",
    "tấu",
    "Giao",
    "hưởng",
    "Nhà",
    "hát",
    "Lớn",
]
CITIES = ["Hà Nội", "Đà Nẵng", "TP. Hồ Chí Minh", "Huế"]
QUERIES = [
    "múa rối",
    "mua roi",
    "roinuoc",
    "mua roi n",
    "da nang",
    "nha hat l",
    "hà",
    "ha",
    "dem nhac tri",
    "jazz",
    "hoa tau",
    "hoatau",
    "giaohuong",
    "saigon",
    "xyz",
    "roc",
    "nuo",
    "rối nước",
    "kich hai",
    "vip",
]


def catalog(n: int, seed: int) -> list[Doc]:
    rnd = random.Random(seed)
    docs = []
    for i in range(n):
        title = " ".join(rnd.choice(WORDS) for _ in range(rnd.randint(1, 4)))
        types = tuple(rnd.sample(["VIP", "Thường", "Phổ thông", "Early bird"], rnd.randint(0, 2)))
        docs.append(
            Doc(
                event_id=str(uuid.UUID(int=rnd.getrandbits(128))),
                title=title,
                venue=rnd.choice(["Nhà hát Lớn", "Cung Tiên Sơn"]),
                city=rnd.choice(CITIES),
                starts_at=NOW + timedelta(hours=rnd.randint(-48, 24 * 60), seconds=i),
                ticket_type_names=types,
                lowest_price=rnd.choice([100_000, 250_000, 800_000]) if types else None,
                available=rnd.choice([0, 5]) if types else 0,
                version=1,
            )
        )
    return docs


@pytest.fixture
async def index(scratch_redis: tuple[aioredis.Redis, Names]) -> Index:
    return Index(*scratch_redis)


async def batches(docs: list[Doc]) -> AsyncIterator[list[Doc]]:
    for i in range(0, len(docs), 50):
        yield docs[i : i + 50]


def same(index_hits: list[domain.Hit], oracle: list[domain.Hit]) -> None:
    assert [(h.doc.event_id, h.exact) for h in index_hits] == [(h.doc.event_id, h.exact) for h in oracle]


FILTERS = [
    Filters(),
    Filters(city="ha noi"),
    Filters(available_only=True),
    Filters(min_price=200_000),
    Filters(max_price=250_000, city="Đà Nẵng"),
    Filters(starts_to=NOW + timedelta(days=20)),
]


async def test_bulk_built_index_answers_like_the_oracle(index: Index) -> None:
    docs = catalog(400, seed=1)
    gen = new_generation()
    assert await index.build(gen, batches(docs)) == 400
    for q in QUERIES:
        for f in FILTERS:
            oracle = domain.search_docs(domain.parse(q), docs, f, NOW)
            page = await index.search(gen, domain.parse(q), f, 0, 1000, now=NOW)
            assert page is not None and page.total == len(oracle), (q, f)
            same(page.hits, oracle)
    # paging walks the same order
    oracle = domain.search_docs(domain.parse("ha"), docs, Filters(), NOW)
    got: list[domain.Hit] = []
    for p in range(0, len(oracle), 7):
        page = await index.search(gen, domain.parse("ha"), Filters(), p, 7, now=NOW)
        assert page is not None
        got += page.hits
    same(got, oracle)


async def test_incremental_writes_updates_and_stock_match_the_oracle(index: Index) -> None:
    docs = catalog(150, seed=2)
    gen = new_generation()
    await index.build(gen, batches([]))
    for d in docs:
        assert await index.upsert(gen, d)
    # a change: new title and ticket types, newer version; an older version is refused
    changed = Doc(
        **{
            **docs[0].__dict__,
            "title": "Hòa tấu Giao hưởng",
            "ticket_type_names": ("VIP",),
            "version": 2,
            "lowest_price": 1,
            "available": 3,
            "stock": (("tt-1", 3),),
        }
    )
    assert await index.upsert(gen, changed)
    assert not await index.upsert(gen, docs[0])
    # stock: the changed event sells out
    assert await index.set_stock(gen, changed.event_id, "tt-1", 0) == 0
    assert await index.set_stock(gen, str(uuid.uuid4()), "tt-2", 4) == -1  # not indexed (yet): ignored
    docs[0] = Doc(**{**changed.__dict__, "available": 0, "stock": (("tt-1", 0),)})
    stored = await index.get_doc(gen, changed.event_id)
    assert stored == docs[0]
    for q in QUERIES:
        for f in FILTERS:
            oracle = domain.search_docs(domain.parse(q), docs, f, NOW)
            page = await index.search(gen, domain.parse(q), f, 0, 1000, now=NOW)
            assert page is not None
            same(page.hits, oracle)
    # no temporary keys left behind
    assert [k async for k in index.redis.scan_iter(match=index.keys(gen).k("tmp", "*"))] == []


async def test_a_missing_generation_answers_none(index: Index) -> None:
    assert await index.search(new_generation(), domain.parse("ha"), Filters(), 0, 10) is None
