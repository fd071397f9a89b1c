"""The gateway's rate limiter (no Redis server): requests are counted in memory, and the hits of every process
meet in one shared count, synced in one pipelined round trip for all clients at once."""

from __future__ import annotations

from typing import Any

from services.gateway.ratelimit import Limiter
from shared.topology import Names


class FakePipeline:
    def __init__(self, redis: FakeRedis) -> None:
        self.redis, self.ops = redis, []  # type: ignore[var-annotated]

    def incrby(self, key: str, n: int) -> None:
        self.ops.append(("incrby", key, n))

    def incr(self, key: str) -> None:
        self.ops.append(("incrby", key, 1))

    def expire(self, key: str, seconds: int) -> None:
        self.ops.append(("expire", key, seconds))

    async def execute(self) -> list[Any]:
        if self.redis.down:
            raise ConnectionError("redis is down")
        self.redis.round_trips += 1
        out: list[Any] = []
        for op, key, n in self.ops:
            if op == "incrby":
                self.redis.values[key] = self.redis.values.get(key, 0) + n
                out.append(self.redis.values[key])
            else:
                out.append(True)
        return out


class FakeRedis:
    def __init__(self) -> None:
        self.values: dict[str, int] = {}
        self.round_trips = 0
        self.down = False

    def pipeline(self, transaction: bool = False) -> FakePipeline:
        return FakePipeline(self)


def limiter(redis: FakeRedis, **kw: Any) -> Limiter:
    return Limiter(redis, Names("t."), sync_seconds=3600, **kw)  # type: ignore[arg-type]


async def test_one_process_enforces_the_limit_exactly_without_a_round_trip_per_request() -> None:
    redis = FakeRedis()
    lim = limiter(redis)
    decisions = [await lim.hit("checkout", "user:a", 3, 10) for _ in range(5)]
    assert [d.allowed for d in decisions] == [True, True, True, False, False]
    assert redis.round_trips == 0
    await lim.sync()
    assert redis.round_trips == 1 and sum(redis.values.values()) == 5
    assert not (await lim.hit("checkout", "user:a", 3, 10)).allowed
    assert (await lim.hit("checkout", "user:b", 3, 10)).allowed  # every client has its own budget
    await lim.aclose()


async def test_processes_share_one_count_after_a_sync() -> None:
    redis = FakeRedis()
    one, two = limiter(redis), limiter(redis)
    for _ in range(3):
        assert (await one.hit("checkout", "user:a", 4, 10)).allowed
    await one.sync()
    assert (await two.hit("checkout", "user:a", 4, 10)).allowed  # two knows nothing yet: at most one sync late
    await two.sync()  # adds its hit, reads back one's three
    assert not (await two.hit("checkout", "user:a", 4, 10)).allowed
    # one learns of two's hits at its own next sync (it syncs only while it has hits to add).
    assert (await one.hit("checkout", "user:a", 4, 10)).allowed
    await one.sync()
    assert not (await one.hit("checkout", "user:a", 4, 10)).allowed
    await one.sync()
    assert sum(redis.values.values()) == 6  # two still holds its refused hit for its next sync


async def test_hits_during_an_outage_are_counted_locally_and_added_when_redis_is_back() -> None:
    redis = FakeRedis()
    lim = limiter(redis)
    redis.down = True
    assert (await lim.hit("orders", "user:a", 2, 10)).allowed
    await lim.sync()  # fails: marks Redis down for a second, keeps counting here
    assert (await lim.hit("orders", "user:a", 2, 10)).allowed
    assert not (await lim.hit("orders", "user:a", 2, 10)).allowed
    redis.down = False
    lim._redis_down_until = 0.0
    await lim.sync()
    assert sum(redis.values.values()) == 3


async def test_a_full_table_asks_redis_and_cannot_count_when_redis_is_down_too() -> None:
    redis = FakeRedis()
    lim = limiter(redis, local_max_keys=1)
    assert (await lim.hit("checkout", "user:a", 1, 10)).allowed
    second = await lim.hit("checkout", "user:b", 1, 10)
    assert second.allowed and not second.uncounted and redis.round_trips == 1
    redis.down = True
    assert (await lim.hit("checkout", "user:c", 1, 10)).uncounted
