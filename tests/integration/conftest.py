"""Fixtures the integration tests share."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator

import pytest
import redis.asyncio as aioredis

from shared.settings import Settings
from shared.topology import Names


@pytest.fixture
async def scratch_redis() -> AsyncIterator[tuple[aioredis.Redis, Names]]:
    """The configured Redis and a key prefix of this test's own; every key under it is deleted after."""
    settings = Settings()  # type: ignore[call-arg]
    r = aioredis.from_url(settings.redis_url)
    prefix = f"test-it-{uuid.uuid4().hex[:8]}."
    try:
        yield r, Names(prefix)
    finally:
        async for key in r.scan_iter(match=f"{prefix}*", count=1000):
            await r.unlink(key)
        await r.aclose()
