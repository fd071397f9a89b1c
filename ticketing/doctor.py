"""`ticketing doctor`: can every dependency be reached (a real handshake, with a deadline), and how close is the
broker to the file-descriptor budget that once wedged it?

RabbitMQ 3.10 stops answering AMQP for ever once its quorum queues need more descriptors than it has: with the
1,024 a ``su``-started node gets, at about 300 quorum queues (about 3.4 descriptors each). The doctor warns at
half of that budget, long before it is used up. The figures come from /proc and rabbitmqctl (with a timeout),
so they are there for a broker on this machine even without the management plugin.
"""

from __future__ import annotations

import asyncio
import subprocess
import time
from collections.abc import Awaitable
from dataclasses import dataclass, field
from urllib.parse import urlsplit

import asyncpg
import redis.asyncio as aioredis
from sqlalchemy.engine import make_url

from shared.settings import Settings
from ticketing import broker_node

# Open files one quorum queue costs a RabbitMQ 3.10 node (measured: 1,024 descriptors wedged it at ~300).
FDS_PER_QUORUM_QUEUE = 3.4
WARN_FRACTION = 0.5


@dataclass
class BrokerFigures:
    fd_soft_limit: int | None = None
    fds_open: int | None = None
    queues: int | None = None
    quorum_queues: int | None = None
    prefix_queues: int | None = None


@dataclass
class Report:
    reachable: dict[str, str | None] = field(default_factory=dict)  # name -> None (ok) or why not
    elapsed: dict[str, float] = field(default_factory=dict)
    broker: BrokerFigures = field(default_factory=BrokerFigures)
    warnings: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return all(why is None for why in self.reachable.values())


def broker_warnings(f: BrokerFigures) -> list[str]:
    """What to tell an operator about the broker's descriptor budget (pure: unit-tested)."""
    out: list[str] = []
    limit = f.fd_soft_limit
    if limit is None:
        return [
            "broker's open-file limit unknown (the broker does not run on this machine); check it there: "
            "/proc/<beam pid>/limits, at least 65536"
        ]
    if limit < broker_node.RECOMMENDED_FD_LIMIT:
        out.append(
            f"broker's open-file limit is {limit}, below RabbitMQ's guidance of "
            f"{broker_node.RECOMMENDED_FD_LIMIT}: start it with `ulimit -n` raised (ticketing/broker_node.py)"
        )
    budget = int(limit / FDS_PER_QUORUM_QUEUE)
    if f.quorum_queues is not None and f.quorum_queues >= budget * WARN_FRACTION:
        out.append(
            f"{f.quorum_queues} quorum queues: over half of the ~{budget} this open-file limit carries "
            "(the broker wedges when they are used up); delete old prefixes' queues or raise the limit"
        )
    if f.fds_open is not None and f.fds_open >= limit * WARN_FRACTION:
        out.append(f"broker has {f.fds_open} of {limit} file descriptors open")
    return out


async def _timed(report: Report, name: str, check: Awaitable[str | None]) -> None:
    started = time.monotonic()
    report.reachable[name] = await check
    report.elapsed[name] = time.monotonic() - started


async def _postgres(settings: Settings, timeout: float) -> str | None:
    url = make_url(settings.database_url).set(drivername="postgresql")
    try:
        conn = await asyncpg.connect(url.render_as_string(hide_password=False), timeout=timeout)
        await conn.close(timeout=timeout)
        return None
    except Exception as exc:
        return f"{type(exc).__name__}: {exc}"[:300]


async def _redis(settings: Settings, timeout: float) -> str | None:
    r = aioredis.from_url(settings.redis_url, socket_connect_timeout=timeout, socket_timeout=timeout)
    try:
        await asyncio.wait_for(r.ping(), timeout=timeout)
        return None
    except Exception as exc:
        return f"{type(exc).__name__}: {exc}"[:300] or "timed out"
    finally:
        await r.aclose()


def broker_figures(settings: Settings, timeout: float) -> BrokerFigures:
    figures = BrokerFigures()
    node = broker_node.local_node_for(settings.rabbitmq_url)
    if node is None:
        return figures
    limits = broker_node.fd_limits(node.pid)
    figures.fd_soft_limit = limits[0] if limits else None
    figures.fds_open = broker_node.open_fds(node.pid)
    try:
        queues = node.queues(timeout)
    except subprocess.TimeoutExpired:  # pragma: no cover - node.queues already maps a timeout to None
        queues = None
    if queues is not None:
        figures.queues = len(queues)
        figures.quorum_queues = sum(1 for _, _, kind in queues if kind == "quorum")
        figures.prefix_queues = sum(1 for name, _, _ in queues if name.startswith(settings.prefix))
    return figures


async def diagnose(settings: Settings, timeout: float = 5.0) -> Report:
    report = Report(reachable=dict.fromkeys(("PostgreSQL", "Redis", "RabbitMQ")))  # fixed order for the output
    await asyncio.gather(
        _timed(report, "PostgreSQL", _postgres(settings, timeout)),
        _timed(report, "Redis", _redis(settings, timeout)),
        _timed(report, "RabbitMQ", broker_node.amqp_handshake(settings.rabbitmq_url, timeout)),
    )
    report.broker = await asyncio.to_thread(broker_figures, settings, timeout * 2)
    if report.reachable["RabbitMQ"] is None or report.broker.fd_soft_limit is not None:
        report.warnings = broker_warnings(report.broker)
    return report


def render(report: Report, settings: Settings) -> list[str]:
    where = urlsplit(settings.rabbitmq_url)
    lines = []
    for name, why in report.reachable.items():
        took = f"{report.elapsed.get(name, 0) * 1000:.0f} ms"
        lines.append(f"{'ok  ' if why is None else 'FAIL'} {name:<10} {took:>8}" + ("" if why is None else f"  {why}"))
    b = report.broker
    if b.fd_soft_limit is not None:
        lines.append(
            f"     broker {where.hostname}:{where.port or 5672}: open-file limit {b.fd_soft_limit}, "
            f"{b.fds_open} open; queues {b.queues if b.queues is not None else '?'} "
            f"({b.quorum_queues if b.quorum_queues is not None else '?'} quorum, "
            f"{b.prefix_queues if b.prefix_queues is not None else '?'} "
            f"with prefix {settings.prefix or '(none)'!r})"
        )
    lines.extend(f"WARN {w}" for w in report.warnings)
    return lines
