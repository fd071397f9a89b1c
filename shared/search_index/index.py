"""The search index in Redis, on plain data structures (no modules), one generation at a time.

Layout (``P`` is the configured prefix, ``G`` a generation id; every key of a generation carries the hash tag
``{G}``, so the multi-key commands of a query (SINTERSTORE, ZINTERSTORE, MULTI) are legal on Redis Cluster;
a generation lives on one shard and scales reads by replicas):

    P search:{ptr}:current        -> G, the generation queries read (switched atomically by a rebuild)
    P search:{ptr}:building       -> G, while a rebuild loads a new generation
    P search:{ptr}:rebuild-lock   -> one rebuild at a time across search instances
    P search:{G}:meta             HASH state, events (count), max_version, built_at
    P search:{G}:ids              HASH event uuid -> doc id (small integers keep the sets compact: intsets)
    P search:{G}:seq              doc id counter
    P search:{G}:docs             HASH doc id -> JSON (what a result shows, per-type availability, version)
    P search:{G}:events           ZSET doc id -> starts_at (epoch s): the ordering, the date filter, homepage
    P search:{G}:price            ZSET doc id -> lowest ticket price
    P search:{G}:instock          SET doc ids with tickets available
    P search:{G}:city:<city>      SET doc ids per folded city
    P search:{G}:w:<word>         SET doc ids containing the folded word
    P search:{G}:p:<prefix>       SET doc ids with a folded word starting with prefix (the word included)
    P search:{G}:x:<word>         SET doc ids containing the accented word (accented words only)
    P search:{G}:xp:<prefix>      SET doc ids with an accented word starting with the accented prefix
"""

from __future__ import annotations

import time
import uuid
from array import array
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import orjson
import redis.asyncio as aioredis

from shared.search_index import domain
from shared.search_index.domain import Doc, Filters, Hit, Page, Query
from shared.topology import Names

EXACT_BONUS = 1e11  # subtracted from the start time of exact-accent hits: they sort first
GLOB_SPECIAL = str.maketrans({c: f"\\{c}" for c in "*?[]\\"})


class Pointers:
    """The pointers share one hash tag: a rebuild switches them in one MULTI, consumers read them in one MGET."""

    def __init__(self, names: Names) -> None:
        self.current = names.redis_key("search", "{ptr}", "current")
        self.building = names.redis_key("search", "{ptr}", "building")
        self.lock = names.redis_key("search", "{ptr}", "rebuild-lock")


class GenKeys:
    def __init__(self, names: Names, gen: str) -> None:
        self.gen = gen
        self.base = names.redis_key("search", "{" + gen + "}")
        self.meta = self.k("meta")
        self.ids = self.k("ids")
        self.seq = self.k("seq")
        self.docs = self.k("docs")
        self.events = self.k("events")
        self.price = self.k("price")
        self.instock = self.k("instock")

    def k(self, *parts: str) -> str:
        return self.base + ":" + ":".join(parts)

    def pattern(self) -> str:
        return self.base.translate(GLOB_SPECIAL) + ":*"

    def city(self, city: str) -> str:
        return self.k("city", domain.city_key(city))

    def word(self, w: str) -> str:
        return self.k("w", w)

    def prefix(self, p: str) -> str:
        return self.k("p", p)

    def exact_word(self, w: str) -> str:
        return self.k("x", w)

    def exact_prefix(self, p: str) -> str:
        return self.k("xp", p)

    def tmp(self) -> str:
        return self.k("tmp", uuid.uuid4().hex)

    def term_keys(self, doc: Doc) -> set[str]:
        t = domain.document_terms(doc)
        keys = {self.city(doc.city)}
        keys.update(self.word(w) for w in t.words)
        keys.update(self.prefix(p) for p in t.prefixes)
        keys.update(self.exact_word(w) for w in t.exact_words)
        keys.update(self.exact_prefix(p) for p in t.exact_prefixes)
        return keys


def text(value: bytes | str | None) -> str:
    """Redis replies as str (the client may or may not decode them)."""
    if value is None:
        return ""
    return value.decode() if isinstance(value, bytes) else value


def new_generation() -> str:
    return f"g{int(time.time())}-{uuid.uuid4().hex[:8]}"


# --- documents as stored -----------------------------------------------------------------------------


def encode_doc(doc: Doc) -> bytes:
    return orjson.dumps(
        {
            "id": doc.event_id,
            "t": doc.title,
            "v": doc.venue,
            "c": doc.city,
            "s": doc.starts_at.isoformat(),
            "p": doc.lowest_price,
            "a": doc.available,
            "n": list(doc.ticket_type_names),
            "tt": dict(doc.stock),
            "ver": str(doc.version),
        }
    )


def decode_doc(raw: bytes | str) -> Doc:
    d = orjson.loads(raw)
    tt = d.get("tt") or {}
    if isinstance(tt, list):  # Lua's cjson writes an empty table as a list
        tt = {}
    return Doc(
        event_id=d["id"],
        title=d["t"],
        venue=d["v"],
        city=d["c"],
        starts_at=datetime.fromisoformat(d["s"]),
        ticket_type_names=tuple(d.get("n") or ()),
        lowest_price=d.get("p"),
        available=int(d.get("a") or 0),
        version=int(d.get("ver") or 0),
        stock=tuple((k, int(v)) for k, v in tt.items()),
    )


# --- scripts (atomic per event; every key they touch is declared, all in one generation's slot) -------

GET_DOC = """
local id = redis.call('HGET', KEYS[1], ARGV[1])
if not id then return false end
return redis.call('HGET', KEYS[2], id)
"""

# Compare-and-set on the stored version: the caller computed the term diff against that version.
UPSERT = """
local id = redis.call('HGET', KEYS[1], ARGV[1])
local oldver = ''
if id then
  local old = redis.call('HGET', KEYS[3], id)
  if old then oldver = cjson.decode(old)['ver'] end
end
if oldver ~= ARGV[2] then return {0, oldver} end
if not id then
  id = tostring(redis.call('INCR', KEYS[2]))
  redis.call('HSET', KEYS[1], ARGV[1], id)
  redis.call('HINCRBY', KEYS[7], 'events', 1)
end
redis.call('HSET', KEYS[3], id, ARGV[3])
redis.call('ZADD', KEYS[4], ARGV[5], id)
if ARGV[6] == '' then redis.call('ZREM', KEYS[5], id) else redis.call('ZADD', KEYS[5], ARGV[6], id) end
if tonumber(ARGV[7]) > 0 then redis.call('SADD', KEYS[6], id) else redis.call('SREM', KEYS[6], id) end
local nr = tonumber(ARGV[8])
local na = tonumber(ARGV[9])
for i = 8, 7 + nr do redis.call('SREM', KEYS[i], id) end
for i = 8 + nr, 7 + nr + na do redis.call('SADD', KEYS[i], id) end
local mv = redis.call('HGET', KEYS[7], 'max_version')
if (not mv) or tonumber(ARGV[4]) > tonumber(mv) then redis.call('HSET', KEYS[7], 'max_version', ARGV[4]) end
return {1, id}
"""

# An event no longer on sale leaves the index: its document, orderings, stock membership and terms.
REMOVE = """
local id = redis.call('HGET', KEYS[1], ARGV[1])
if not id then return 0 end
redis.call('HDEL', KEYS[1], ARGV[1])
redis.call('HDEL', KEYS[2], id)
redis.call('ZREM', KEYS[3], id)
redis.call('ZREM', KEYS[4], id)
redis.call('SREM', KEYS[5], id)
redis.call('HINCRBY', KEYS[6], 'events', -1)
for i = 7, #KEYS do redis.call('SREM', KEYS[i], id) end
return 1
"""

STOCK = """
local id = redis.call('HGET', KEYS[1], ARGV[1])
if not id then return -1 end
local raw = redis.call('HGET', KEYS[2], id)
if not raw then return -1 end
local d = cjson.decode(raw)
if type(d['tt']) ~= 'table' then d['tt'] = {} end
d['tt'][ARGV[2]] = tonumber(ARGV[3])
local total = 0
for _, v in pairs(d['tt']) do if v > 0 then total = total + v end end
d['a'] = total
redis.call('HSET', KEYS[2], id, cjson.encode(d))
if total > 0 then redis.call('SADD', KEYS[3], id) else redis.call('SREM', KEYS[3], id) end
return total
"""


# A whole query in one round trip: missing-space splits (the walk of domain.splits, over the words that
# exist), set algebra into temporary keys, filters, exact-accent ranking, the page and its documents.
SEARCH = """
local plan = cjson.decode(ARGV[1])
if redis.call('HGET', KEYS[1], 'state') ~= 'ready' then return {-1} end
local MINP, MAXP, MAXS = plan.minp, plan.maxp, plan.maxs
local temps, ntmp = {}, 0
local function tmp()
  ntmp = ntmp + 1
  local key = KEYS[plan.tmp0 + ntmp]
  temps[#temps + 1] = key
  return key
end
local known = {}
local function has(i)
  local v = known[i]
  if v == nil then
    v = redis.call('EXISTS', KEYS[i]) == 1
    known[i] = v
  end
  return v
end
local sets = {}
for _, w in ipairs(plan.words) do
  local found = {}
  local function walk(start, acc)
    if #found >= MAXS * 4 then return end
    if #acc > 0 and w.n - start >= MINP then
      local ki
      if w.last then ki = w.pre[tostring(start)] else ki = w.sub[start .. ':' .. w.n] end
      if ki and has(ki) then
        local pieces = {}
        for _, a in ipairs(acc) do pieces[#pieces + 1] = KEYS[a] end
        pieces[#pieces + 1] = KEYS[ki]
        found[#found + 1] = pieces
      end
    end
    if #acc + 1 >= MAXP then return end
    for e = start + MINP, w.n - MINP do
      local ki = w.sub[start .. ':' .. e]
      if ki and has(ki) then
        local nacc = {}
        for _, a in ipairs(acc) do nacc[#nacc + 1] = a end
        nacc[#nacc + 1] = ki
        walk(e, nacc)
      end
    end
  end
  walk(0, {})
  local alts = {KEYS[w.direct]}
  local taken = 0
  for len = 2, MAXP do  -- fewest pieces first, in the order found (a stable sort, as in Python)
    for _, pieces in ipairs(found) do
      if #pieces == len and taken < MAXS then
        taken = taken + 1
        local t = tmp()
        redis.call('SINTERSTORE', t, unpack(pieces))
        alts[#alts + 1] = t
      end
    end
  end
  if #alts == 1 then
    sets[#sets + 1] = alts[1]
  else
    local t = tmp()
    redis.call('SUNIONSTORE', t, unpack(alts))
    sets[#sets + 1] = t
  end
end
if plan.city > 0 then sets[#sets + 1] = KEYS[plan.city] end
if plan.instock then sets[#sets + 1] = KEYS[4] end
local lo, hi = ARGV[2], ARGV[3]
local has_price = plan.min_price ~= cjson.null or plan.max_price ~= cjson.null
local total, rows
if #sets == 0 and not has_price and #plan.exact == 0 then
  total = redis.call('ZCOUNT', KEYS[2], lo, hi)
  rows = redis.call('ZRANGE', KEYS[2], lo, hi, 'BYSCORE', 'LIMIT', plan.offset, plan.limit, 'WITHSCORES')
else
  local c = tmp()
  local args = {c, 1 + #sets, KEYS[2]}
  for _, key in ipairs(sets) do args[#args + 1] = key end
  args[#args + 1] = 'WEIGHTS'
  args[#args + 1] = 1
  for _ in ipairs(sets) do args[#args + 1] = 0 end
  redis.call('ZINTERSTORE', unpack(args))
  redis.call('ZREMRANGEBYSCORE', c, '-inf', '(' .. lo)
  if hi ~= '+inf' then redis.call('ZREMRANGEBYSCORE', c, '(' .. hi, '+inf') end
  if has_price then
    local p = tmp()
    redis.call('ZINTERSTORE', p, 2, c, KEYS[3], 'WEIGHTS', 0, 1)
    if plan.min_price ~= cjson.null then redis.call('ZREMRANGEBYSCORE', p, '-inf', '(' .. plan.min_price) end
    if plan.max_price ~= cjson.null then redis.call('ZREMRANGEBYSCORE', p, '(' .. plan.max_price, '+inf') end
    redis.call('ZINTERSTORE', c, 2, c, p, 'WEIGHTS', 1, 0)
  end
  local final = c
  if #plan.exact > 0 then
    local e = tmp()
    local a = {e, 1 + #plan.exact, c}
    for _, x in ipairs(plan.exact) do a[#a + 1] = KEYS[x] end
    a[#a + 1] = 'WEIGHTS'
    a[#a + 1] = 0
    for _ in ipairs(plan.exact) do a[#a + 1] = 1 end
    redis.call('ZINTERSTORE', unpack(a))
    final = tmp()
    redis.call('ZUNIONSTORE', final, 2, c, e, 'WEIGHTS', 1, -plan.bonus)
  end
  total = redis.call('ZCARD', final)
  rows = redis.call('ZRANGE', final, plan.offset, plan.offset + plan.limit - 1, 'WITHSCORES')
end
local out = {total}
for i = 1, #rows, 2 do
  out[#out + 1] = rows[i + 1]
  out[#out + 1] = redis.call('HGET', KEYS[5], rows[i]) or ''
end
if #temps > 0 then redis.call('UNLINK', unpack(temps)) end  -- freed off the main thread
return out
"""


@dataclass
class Index:
    redis: aioredis.Redis
    names: Names

    def __post_init__(self) -> None:
        self.pointers = Pointers(self.names)
        self._get_doc = self.redis.register_script(GET_DOC)
        self._upsert = self.redis.register_script(UPSERT)
        self._stock = self.redis.register_script(STOCK)
        self._remove = self.redis.register_script(REMOVE)
        self._search = self.redis.register_script(SEARCH)
        self._cached_gen: tuple[float, str | None] = (0.0, None)

    # --- generations --------------------------------------------------------------------------------

    def keys(self, gen: str) -> GenKeys:
        return GenKeys(self.names, gen)

    async def current(self, max_age: float = 0.0) -> str | None:
        """The live generation; ``max_age`` > 0 lets a hot read path reuse a recent answer."""
        at, gen = self._cached_gen
        if max_age and gen is not None and time.monotonic() - at < max_age:
            return gen
        raw = await self.redis.get(self.pointers.current)
        gen = text(raw) or None
        self._cached_gen = (time.monotonic(), gen)
        return gen

    def forget_current(self) -> None:
        self._cached_gen = (0.0, None)

    async def ready(self, gen: str) -> bool:
        return text(await self.redis.hget(self.keys(gen).meta, "state")) == "ready"

    async def meta(self, gen: str) -> dict[str, str]:
        raw = await self.redis.hgetall(self.keys(gen).meta)
        return {text(k): text(v) for k, v in raw.items()}

    async def drop(self, gen: str) -> int:
        """Delete a generation's keys (UNLINK frees memory off the main thread)."""
        n = 0
        batch: list[bytes] = []
        async for key in self.redis.scan_iter(match=self.keys(gen).pattern(), count=2000):
            batch.append(key)
            if len(batch) >= 1000:
                n += await self.redis.unlink(*batch)
                batch = []
        if batch:
            n += await self.redis.unlink(*batch)
        return n

    # --- writes -------------------------------------------------------------------------------------

    async def get_doc(self, gen: str, event_id: str) -> Doc | None:
        k = self.keys(gen)
        raw = await self._get_doc(keys=[k.ids, k.docs], args=[event_id])
        return decode_doc(raw) if raw else None

    async def upsert(self, gen: str, doc: Doc) -> bool:
        """Write an event's document and terms unless the index already has this version or a newer one."""
        k = self.keys(gen)
        for _ in range(10):
            old = await self.get_doc(gen, doc.event_id)
            if old is not None and old.version >= doc.version:
                return False
            new_terms = k.term_keys(doc)
            old_terms = k.term_keys(old) if old is not None else set()
            remove = sorted(old_terms - new_terms)
            add = sorted(new_terms - old_terms)
            result = await self._upsert(
                keys=[k.ids, k.seq, k.docs, k.events, k.price, k.instock, k.meta, *remove, *add],
                args=[
                    doc.event_id,
                    str(old.version) if old else "",
                    encode_doc(doc),
                    str(doc.version),
                    int(doc.starts_at.timestamp()),
                    "" if doc.lowest_price is None else doc.lowest_price,
                    doc.available,
                    len(remove),
                    len(add),
                ],
            )
            if int(result[0]) == 1:
                return True
        raise RuntimeError(f"index write for {doc.event_id} kept conflicting")

    async def remove(self, gen: str, event_id: str) -> bool:
        """Take an event out of this generation (it is no longer on sale); False if it was not there."""
        k = self.keys(gen)
        old = await self.get_doc(gen, event_id)
        if old is None:
            return False
        terms = sorted(k.term_keys(old))
        return bool(
            await self._remove(keys=[k.ids, k.docs, k.events, k.price, k.instock, k.meta, *terms], args=[event_id])
        )

    async def set_stock(self, gen: str, event_id: str, ticket_type_id: str, available: int) -> int:
        """Record one ticket type's availability; -1 when the event is not in this generation (yet)."""
        k = self.keys(gen)
        return int(
            await self._stock(keys=[k.ids, k.docs, k.instock], args=[event_id, ticket_type_id, max(available, 0)])
        )

    async def build(self, gen: str, batches: AsyncIterator[list[Doc]], versions: dict[str, int] | None = None) -> int:
        """Load a new generation in bulk (postings grouped per term, so a few commands per term).

        ``versions`` (if given) receives each loaded event's version, for the rebuild's catch-up."""
        k = self.keys(gen)
        await self.redis.hset(k.meta, mapping={"state": "building", "started_at": datetime.now(UTC).isoformat()})
        postings: dict[str, array[int]] = {}
        seq = 0
        max_version = 0
        async for batch in batches:
            pipe = self.redis.pipeline(transaction=False)
            ids: dict[str, int] = {}
            docs: dict[str, bytes] = {}
            starts: dict[str, float] = {}
            prices: dict[str, int] = {}
            instock: list[int] = []
            for doc in batch:
                seq += 1
                ids[doc.event_id] = seq
                docs[str(seq)] = encode_doc(doc)
                starts[str(seq)] = int(doc.starts_at.timestamp())
                if doc.lowest_price is not None:
                    prices[str(seq)] = doc.lowest_price
                if doc.available > 0:
                    instock.append(seq)
                max_version = max(max_version, doc.version)
                if versions is not None:
                    versions[doc.event_id] = doc.version
                for key in k.term_keys(doc):
                    postings.setdefault(key, array("I")).append(seq)
            pipe.hset(k.ids, mapping=ids)  # type: ignore[arg-type]
            pipe.hset(k.docs, mapping=docs)  # type: ignore[arg-type]
            pipe.zadd(k.events, starts)  # type: ignore[arg-type]
            if prices:
                pipe.zadd(k.price, prices)  # type: ignore[arg-type]
            if instock:
                pipe.sadd(k.instock, *instock)
            await pipe.execute()
        pipe = self.redis.pipeline(transaction=False)
        pending = 0
        for key, members in postings.items():
            for i in range(0, len(members), 5000):
                pipe.sadd(key, *members[i : i + 5000])
                pending += 1
            if pending >= 2000:
                await pipe.execute()
                pending = 0
        await pipe.execute()
        await self.redis.set(k.seq, seq)
        await self.redis.hset(
            k.meta,
            mapping={
                "state": "ready",
                "events": seq,
                "max_version": max_version,
                "built_at": datetime.now(UTC).isoformat(),
            },
        )
        return seq

    # --- reads --------------------------------------------------------------------------------------

    async def search(
        self, gen: str, query: Query, filters: Filters, offset: int, limit: int, now: datetime | None = None
    ) -> Page | None:
        """One page of hits and the total, in one round trip; None when this generation is gone or not ready."""
        k = self.keys(gen)
        now = now or datetime.now(UTC)
        keys = [k.meta, k.events, k.price, k.instock, k.docs]
        index_of: dict[str, int] = {}

        def ref(key: str) -> int:  # 1-based position in KEYS (every key a script touches is declared)
            if key not in index_of:
                keys.append(key)
                index_of[key] = len(keys)
            return index_of[key]

        words = []
        for w in query.words:
            n = len(w.folded)
            splittable = n <= domain.MAX_SPLIT_LEN
            sub = {
                f"{i}:{j}": ref(k.word(w.folded[i:j]))
                for i in range(n)
                for j in range(i + domain.MIN_PIECE, n + 1)
                if splittable and not (i == 0 and j == n)
            }
            pre = (
                {str(i): ref(k.prefix(w.folded[i:])) for i in range(domain.MIN_PIECE, n - domain.MIN_PIECE + 1)}
                if splittable and w.last
                else {}
            )
            words.append(
                {
                    "direct": ref(k.prefix(w.folded) if w.last else k.word(w.folded)),
                    "n": n,
                    "last": w.last,
                    "sub": sub,
                    "pre": pre,
                }
            )
        exact = [ref(k.exact_prefix(w.exact) if w.last else k.exact_word(w.exact)) for w in query.words if w.accented]
        plan: dict[str, Any] = {
            "words": words,
            "exact": exact,
            "instock": filters.available_only,
            "city": ref(k.city(filters.city)) if filters.city else 0,
            "min_price": filters.min_price,
            "max_price": filters.max_price,
            "offset": offset,
            "limit": limit,
            "bonus": EXACT_BONUS,
            "minp": domain.MIN_PIECE,
            "maxp": domain.MAX_PIECES,
            "maxs": domain.MAX_SPLITS,
        }
        plan["tmp0"] = len(keys)
        keys.extend(k.tmp() for _ in range(len(words) * (domain.MAX_SPLITS + 1) + 4))
        lo = repr((filters.starts_from or now).timestamp())
        hi = repr(filters.starts_to.timestamp()) if filters.starts_to else "+inf"
        res = await self._search(keys=keys, args=[orjson.dumps(plan), lo, hi])
        if not res or int(res[0]) < 0:
            return None
        hits = [Hit(decode_doc(raw), float(score) < 0) for score, raw in zip(res[1::2], res[2::2], strict=True) if raw]
        return Page(total=int(res[0]), hits=hits, source="index")
