"""What the demo's and the benchmarks' load client can itself do: a figure is only the server's when the client
reaches several times more against a trivial endpoint (docs/benchmarks.md)."""

from __future__ import annotations

import asyncio
import time
from typing import Any


async def client_ceiling(session: Any, concurrency: int, seconds: float = 1.5) -> float:
    """Requests/s this aiohttp session reaches at ``concurrency`` against the gateway's trivial ``/healthz``."""
    done = 0
    deadline = time.perf_counter() + seconds

    async def worker() -> None:
        nonlocal done
        while time.perf_counter() < deadline:
            async with session.get("/healthz") as r:
                await r.read()
            done += 1

    started = time.perf_counter()
    await asyncio.gather(*(worker() for _ in range(concurrency)))
    return done / (time.perf_counter() - started)
