"""GET /search, and the search/caching helpers the catalog routes use (homepage, event detail, admin
write-through). The index and the caches belong to the search service (services/search)."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any
from uuid import UUID

import orjson
from fastapi import APIRouter, Depends, Query, Request, Response
from pydantic import BaseModel, Field
from sqlalchemy import text

from services.gateway import ratelimit
from services.gateway.edge import EdgeRoute
from services.gateway.problems import PROBLEM_JSON, Problem
from services.gateway.ratelimit import RateLimit
from services.gateway.schemas import LINE, MAX_PRICE, EventOut, TicketTypeOut, check_instant
from shared.search_index import domain
from shared.search_index.cache import EventCache, make_cache
from shared.search_index.reader import SearchReader, SearchUnavailable

router = APIRouter(route_class=EdgeRoute)
# Bounds of a query (422 above them): what a person types, and what keeps the read-through path's SQL small.
MAX_QUERY_CHARS = 100
MAX_WORD_CHARS = 32
_PROBLEM: dict[str, Any] = {"content": {PROBLEM_JSON: {}}}


class SearchHit(BaseModel):
    event_id: UUID
    title: str
    venue: str
    city: str
    starts_at: datetime
    lowest_price: int | None = Field(description="integer VND; null when the event has no ticket types")
    available: int = Field(description="tickets available now (display only; never decides a sale)")
    exact: bool = Field(description="every accented word of the query matched with its accents")


class SearchPage(BaseModel):
    total: int
    page: int
    page_size: int
    pages: int
    source: str = Field(description="index (Redis) or database (read-through while the index is missing)")
    results: list[SearchHit]


def reader(request: Request) -> SearchReader:
    state = request.app.state
    if getattr(state, "search_reader", None) is None:
        state.search_reader = SearchReader(
            state.redis,
            state.names,
            state.engine,
            state.settings.search_fallback_concurrency,
            state.settings.search_fallback_queue_seconds,
        )
    return state.search_reader  # type: ignore[no-any-return]


def event_cache(request: Request) -> EventCache:
    state = request.app.state
    if getattr(state, "event_cache", None) is None:
        state.event_cache = make_cache(state.redis, state.settings)
    return state.event_cache  # type: ignore[no-any-return]


def hit_json(h: domain.Hit) -> dict[str, Any]:
    d = h.doc
    return {
        "event_id": d.event_id,
        "title": d.title,
        "venue": d.venue,
        "city": d.city,
        "starts_at": d.starts_at.isoformat(),
        "lowest_price": d.lowest_price,
        "available": d.available,
        "exact": h.exact,
    }


@router.get(
    "/search",
    response_model=SearchPage,
    tags=["catalog"],
    responses={422: _PROBLEM, 429: _PROBLEM, 503: _PROBLEM},
    dependencies=[Depends(RateLimit(ratelimit.SEARCH))],
    summary="Upcoming events by keyword (accents and spaces optional) and filters",
)
async def search(
    request: Request,
    q: Annotated[
        str,
        Query(
            max_length=MAX_QUERY_CHARS,
            pattern=LINE,
            description=f"at most {domain.MAX_QUERY_TOKENS} words of at most {MAX_WORD_CHARS} "
            "letters; the last one matches as a prefix",
        ),
    ] = "",
    city: Annotated[str | None, Query(max_length=100, pattern=LINE)] = None,
    starts_from: Annotated[datetime | None, Query(alias="from", description="default: now")] = None,
    starts_to: Annotated[datetime | None, Query(alias="to")] = None,
    min_price: Annotated[int | None, Query(ge=0, le=MAX_PRICE, description="on the lowest ticket price")] = None,
    max_price: Annotated[int | None, Query(ge=0, le=MAX_PRICE)] = None,
    available: Annotated[bool, Query(description="only events with tickets available")] = False,
    page: Annotated[int, Query(ge=1, le=500)] = 1,
    page_size: Annotated[int, Query(ge=1, le=50)] = 20,
) -> Response:
    for name, value in (("from", starts_from), ("to", starts_to)):
        if value is not None:
            try:
                check_instant(value, name)
            except ValueError as exc:
                raise Problem(422, "Invalid request", str(exc), "invalid-request") from exc
    words = domain.tokens(q)
    if len(words) > domain.MAX_QUERY_TOKENS or any(len(domain.fold(w)) > MAX_WORD_CHARS for w in words):
        raise Problem(
            422,
            "Invalid request",
            f"at most {domain.MAX_QUERY_TOKENS} words of at most {MAX_WORD_CHARS} letters",
            "invalid-request",
        )
    filters = domain.Filters(
        city=city or None,
        starts_from=starts_from,
        starts_to=starts_to,
        min_price=min_price,
        max_price=max_price,
        available_only=available,
    )
    try:
        result = await reader(request).search(domain.parse(q), filters, (page - 1) * page_size, page_size)
    except SearchUnavailable as exc:
        raise shed(exc) from exc
    # Serialised here (orjson, no second validation pass): this is the hottest read of the API.
    body = {
        "total": result.total,
        "page": page,
        "page_size": page_size,
        "pages": (result.total + page_size - 1) // page_size,
        "source": result.source,
        "results": [hit_json(h) for h in result.hits],
    }
    return Response(orjson.dumps(body), media_type="application/json", headers={"X-Search-Source": result.source})


def shed(exc: SearchUnavailable) -> Problem:
    problem = Problem(503, "Search unavailable", str(exc), "unavailable")
    problem.headers["Retry-After"] = "2"
    return problem


async def upcoming(request: Request, offset: int, limit: int) -> list[domain.Doc]:
    """The homepage's events (the index, or PostgreSQL under the read-through path's concurrency cap)."""
    try:
        docs, _ = await reader(request).upcoming(offset, limit)
    except SearchUnavailable as exc:
        raise shed(exc) from exc
    return docs


async def availability(request: Request, event_id: UUID) -> dict[str, int]:
    async with request.app.state.engine.connect() as conn:
        rows = await conn.execute(
            text("SELECT id, available FROM read_api.ticket_types WHERE event_id = :id"), {"id": event_id}
        )
        return {str(r.id): max(int(r.available), 0) for r in rows}


class EventWritten(EventOut):
    searchable: bool = Field(description="GET /search finds this version now (else: within seconds)")


class TicketTypeWritten(TicketTypeOut):
    searchable: bool = Field(description="GET /search finds this version now (else: within seconds)")


async def after_catalog_change(request: Request, event_id: UUID, body: dict[str, Any], status: int) -> Response:
    """Write-through for the admin routes: drop the cached detail, wait (bounded) until the index has this
    version, and say whether the change is searchable yet."""
    from fastapi.responses import JSONResponse

    version = await reader(request).event_version(event_id)
    searchable = False
    if version is not None:
        await event_cache(request).invalidate(str(event_id), version)
        wait = request.app.state.settings.search_writethrough_wait_seconds
        searchable = await reader(request).wait_searchable(event_id, version, wait)
    body = {**body, "searchable": searchable}
    return JSONResponse(body, status_code=status, headers={"X-Searchable": "true" if searchable else "false"})
