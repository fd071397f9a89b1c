"""What the search service reads from PostgreSQL: only the read_api views (inventory owns the tables).

Used to (re)build the index, to refresh one event after a catalog message, and as the read-through path
that answers searches while the index is missing or being rebuilt.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Sequence
from datetime import UTC, datetime
from typing import Any
from uuid import UUID

from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine

from shared.search_index import domain
from shared.search_index.domain import Doc, Filters, Page, Query

# Only events on sale are searchable (read_api.searchable_events); a cancelled one leaves the index.
# The version is computed in SQL (numeric, exact) so that every path agrees on it to the microsecond.
_VERSION = "(extract(epoch FROM e.updated_at) * 1000000)::bigint"
_DOC_SELECT = f"""
SELECT e.id, e.title, e.venue, e.city, e.starts_at, {_VERSION} AS version,
       MIN(t.price) AS lowest_price,
       COALESCE(SUM(GREATEST(t.available, 0)), 0) AS available,
       COALESCE(array_agg(t.name ORDER BY t.price, t.name) FILTER (WHERE t.id IS NOT NULL), '{{}}') AS names,
       COALESCE(array_agg(t.id::text) FILTER (WHERE t.id IS NOT NULL), '{{}}') AS tt_ids,
       COALESCE(array_agg(GREATEST(t.available, 0)) FILTER (WHERE t.id IS NOT NULL), '{{}}') AS tt_avail
FROM read_api.searchable_events e LEFT JOIN read_api.ticket_types t ON t.event_id = e.id
"""
_GROUP = " GROUP BY e.id, e.title, e.venue, e.city, e.starts_at, e.updated_at "


def _doc(r: Any) -> Doc:
    return Doc(
        event_id=str(r.id),
        title=r.title,
        venue=r.venue,
        city=r.city,
        starts_at=r.starts_at,
        ticket_type_names=tuple(r.names),
        lowest_price=r.lowest_price,
        available=int(r.available),
        version=int(r.version),
        stock=tuple(zip(r.tt_ids, (int(a) for a in r.tt_avail), strict=True)),
    )


async def load_docs(engine: AsyncEngine, event_ids: Sequence[UUID | str]) -> list[Doc]:
    async with engine.connect() as conn:
        rows = await conn.execute(
            text(_DOC_SELECT + "WHERE e.id = ANY(:ids)" + _GROUP), {"ids": [UUID(str(i)) for i in event_ids]}
        )
        return [_doc(r) for r in rows]


async def iter_docs(engine: AsyncEngine, batch: int = 2000) -> AsyncIterator[list[Doc]]:
    """Every event, in id order, a batch at a time (keyset paging: no long transaction, no offset scans)."""
    after = UUID(int=0)
    while True:
        async with engine.connect() as conn:
            rows = (
                await conn.execute(
                    text(_DOC_SELECT + "WHERE e.id > :after" + _GROUP + "ORDER BY e.id LIMIT :n"),
                    {"after": after, "n": batch},
                )
            ).all()
        if not rows:
            return
        yield [_doc(r) for r in rows]
        after = rows[-1].id


async def changed_since(engine: AsyncEngine, since: datetime) -> list[Doc]:
    async with engine.connect() as conn:
        rows = await conn.execute(text(_DOC_SELECT + "WHERE e.updated_at >= :since" + _GROUP), {"since": since})
        return [_doc(r) for r in rows]


async def db_now(engine: AsyncEngine) -> datetime:
    async with engine.connect() as conn:
        return (await conn.execute(text("SELECT now()"))).scalar_one()  # type: ignore[no-any-return]


async def catalog_state(engine: AsyncEngine) -> tuple[int, int]:
    """(number of events, newest version): what a complete, current index must also report."""
    async with engine.connect() as conn:
        row = (
            await conn.execute(
                text(f"SELECT count(*) AS n, COALESCE(MAX({_VERSION}), 0) AS v FROM read_api.searchable_events e")
            )
        ).one()
    return int(row.n), int(row.v)


async def event_version(engine: AsyncEngine, event_id: UUID) -> int | None:
    async with engine.connect() as conn:
        return (
            await conn.execute(  # type: ignore[no-any-return]
                text(f"SELECT {_VERSION} FROM read_api.events e WHERE e.id = :id"), {"id": event_id}
            )
        ).scalar_one_or_none()


async def search(
    engine: AsyncEngine, query: Query, filters: Filters, offset: int, limit: int, now: datetime | None = None
) -> Page:
    """The read-through path: SQL narrows the candidates (filters, and per query word an accent-class regex
    that every match satisfies), then the same matcher and ranking as the index decide. Slower, still correct."""
    now = now or datetime.now(UTC)
    where = ["e.starts_at >= :lo"]
    params: dict[str, Any] = {"lo": filters.starts_from or now}
    if filters.starts_to is not None:
        where.append("e.starts_at <= :hi")
        params["hi"] = filters.starts_to
    having: list[str] = []
    if filters.min_price is not None:
        having.append("MIN(t.price) >= :min_price")
        params["min_price"] = filters.min_price
    if filters.max_price is not None:
        having.append("MIN(t.price) <= :max_price")
        params["max_price"] = filters.max_price
    if filters.available_only:
        having.append("SUM(GREATEST(t.available, 0)) > 0")
    searched = "(e.title || ' ' || e.venue || ' ' || e.city || ' ' || COALESCE(string_agg(t.name, ' '), ''))"
    for i, w in enumerate(query.words):
        having.append(f"{searched} ~ :re{i}")
        params[f"re{i}"] = domain.sql_word_pattern(w)
    sql = _DOC_SELECT + "WHERE " + " AND ".join(where) + _GROUP
    if having:
        sql += "HAVING " + " AND ".join(having)
    if not query.words and filters.city is None:
        # Nothing for the matcher to decide (city is compared folded, in Python): SQL orders and pages, as the
        # ranking of a wordless query is just (starts_at, id), and the whole catalog never leaves PostgreSQL.
        paged = (
            f"SELECT *, count(*) OVER () AS total FROM ({sql}) AS d ORDER BY d.starts_at, d.id "
            "LIMIT :limit OFFSET :offset"
        )
        async with engine.connect() as conn:
            rows = (await conn.execute(text(paged), {**params, "limit": limit, "offset": offset})).all()
        total = int(rows[0].total) if rows else await _count(engine, sql, params)
        return Page(total=total, hits=[domain.Hit(_doc(r), False) for r in rows], source="database")
    async with engine.connect() as conn:
        rows = (await conn.execute(text(sql), params)).all()
    # Folding and matching every candidate is CPU work: off the event loop, so the gateway keeps answering.
    hits = await asyncio.to_thread(lambda: domain.search_docs(query, [_doc(r) for r in rows], filters, now))
    return Page(total=len(hits), hits=hits[offset : offset + limit], source="database")


async def _count(engine: AsyncEngine, sql: str, params: dict[str, Any]) -> int:
    """The total of a page past the end (OFFSET beyond the last row returns no row to carry it)."""
    async with engine.connect() as conn:
        return int((await conn.execute(text(f"SELECT count(*) FROM ({sql}) AS d"), params)).scalar_one())


async def upcoming(engine: AsyncEngine, offset: int, limit: int) -> list[Doc]:
    """The homepage from PostgreSQL: ordered and paged in SQL (no matcher needed)."""
    async with engine.connect() as conn:
        rows = await conn.execute(
            text(
                _DOC_SELECT + "WHERE e.starts_at > now()" + _GROUP + "ORDER BY e.starts_at, e.id "
                "LIMIT :limit OFFSET :offset"
            ),
            {"limit": limit, "offset": offset},
        )
        return [_doc(r) for r in rows]
