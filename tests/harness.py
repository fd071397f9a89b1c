"""Test harness: every test run gets its own database, queue prefix and Redis key prefix on the real servers
named by the settings (localhost by default), and the services run as real processes."""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import os
import shutil
import subprocess
import sys
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any, TypeVar
from urllib.parse import urlsplit

import aio_pika
import asyncpg
import httpx
import redis.asyncio as aioredis
from sqlalchemy.engine import make_url

from services.gateway.auth import issue_token
from shared.db import create_database_if_missing, drop_database
from shared.migrate import upgrade
from shared.settings import Settings
from shared.topology import Names, all_queue_names, mailer_notifications
from ticketing import broker_node
from ticketing.ports import free_port

T = TypeVar("T")

START_HINTS = {
    "PostgreSQL": "pg_ctlcluster --skip-systemctl-redirect $(ls /etc/postgresql) main start",
    "Redis": 'redis-server --daemonize yes --bind 127.0.0.1 --port 6379 --save "" --appendonly no',
    "RabbitMQ": "rabbitmq-server -detached",
}


def docker_engine_available() -> bool:
    if shutil.which("docker") is None:
        return False
    return subprocess.run(["docker", "info"], capture_output=True, timeout=10).returncode == 0


async def check_servers(settings: Settings) -> list[str]:
    """Names of the servers that do not answer, each with the command that starts it."""
    missing: list[str] = []
    url = make_url(settings.database_url).set(drivername="postgresql", database="postgres")
    try:
        conn = await asyncpg.connect(url.render_as_string(hide_password=False), timeout=5)
        await conn.close()
    except Exception as exc:
        missing.append(
            f"PostgreSQL at {url.host}:{url.port} ({type(exc).__name__}); start it: {START_HINTS['PostgreSQL']}"
        )
    try:
        r = aioredis.from_url(settings.redis_url)
        await r.ping()
        await r.aclose()
    except Exception as exc:
        missing.append(f"Redis at {settings.redis_url} ({type(exc).__name__}); start it: {START_HINTS['Redis']}")
    try:
        conn2 = await aio_pika.connect(settings.rabbitmq_url, timeout=5)
        await conn2.close()
    except Exception as exc:
        missing.append(
            f"RabbitMQ at {settings.rabbitmq_url} ({type(exc).__name__}); start it: {START_HINTS['RabbitMQ']}"
        )
    return missing


# How long the configured broker gets to complete an AMQP handshake before the run starts a node of its own.
BROKER_CHECK_SECONDS = float(os.environ.get("TICKETING_TEST_BROKER_CHECK_SECONDS", "10"))


def own_broker_if_sick(settings: Settings, resources: contextlib.ExitStack, say: Callable[[str], None]) -> str | None:
    """If the configured broker does not complete an AMQP handshake in BROKER_CHECK_SECONDS (down, or wedged:
    TCP accepted and no ``Connection.Start``), start a RabbitMQ node of the run's own, stopped when
    ``resources`` closes, and return its URL. ``TICKETING_TEST_OWN_BROKER=1`` asks for one regardless."""
    forced = os.environ.get("TICKETING_TEST_OWN_BROKER", "") == "1"
    # In a thread: this runs before the session's event loop, which asyncio.run must not disturb.
    with concurrent.futures.ThreadPoolExecutor(1) as pool:
        why = (
            "asked for (TICKETING_TEST_OWN_BROKER=1)"
            if forced
            else pool.submit(broker_node.handshake_ok, settings.rabbitmq_url, BROKER_CHECK_SECONDS).result()
        )
    if why is None:
        return None
    node = broker_node.BrokerNode.create("ticketing-test")
    node.start()
    resources.callback(node.stop)
    limit = node.check_fd_limit()
    where = urlsplit(settings.rabbitmq_url)
    say(
        f"RabbitMQ at {where.hostname}:{where.port or 5672}: {why}; this run uses "
        f"its own node {node.name} on port {node.port} (open-file limit {limit}, data {node.base})"
    )
    return node.url


async def sweep_stale_test_queues(settings: Settings, say: Callable[[str], None]) -> None:
    """Delete what crashed earlier test runs left behind (their prefix has no consumer anywhere)."""
    runs, queues = await broker_node.sweep_stale(settings.rabbitmq_url, "test-")
    if queues:
        say(f"swept {queues} queues left by {runs} earlier test runs")


async def not_ready_reason(client: httpx.AsyncClient, port: int) -> str | None:
    """Why the service serving health on ``port`` is not ready; None once its /readyz answers 200 (for a
    consumer service: bound and consuming)."""
    try:
        r = await client.get(f"http://127.0.0.1:{port}/readyz")
    except httpx.HTTPError as exc:
        return f"port {port}: {type(exc).__name__}"
    return None if r.status_code == 200 else f"port {port}: {r.status_code} {r.text[:200]}"


def run_environment(base: Settings) -> dict[str, str]:
    """Environment for this run's services: own database, own prefix, free ports, short timers."""
    run_id = uuid.uuid4().hex[:10]
    db_url = make_url(base.database_url).set(database=f"ticketing_test_{run_id}")
    return {
        **os.environ,
        "TICKETING_ENVIRONMENT": "test",
        "TICKETING_DATABASE_URL": db_url.render_as_string(hide_password=False),
        "TICKETING_RABBITMQ_URL": base.rabbitmq_url,
        "TICKETING_REDIS_URL": base.redis_url,
        "TICKETING_PREFIX": f"test-{run_id}.",
        "TICKETING_JWT_SECRET": f"test-secret-{uuid.uuid4().hex}",
        "TICKETING_GATEWAY_PORT": str(free_port()),
        "TICKETING_INVENTORY_PORT": str(free_port()),
        "TICKETING_PAYMENT_PORT": str(free_port()),
        "TICKETING_MAILER_PORT": str(free_port()),
        "TICKETING_SEARCH_PORT": str(free_port()),
        # Payments: the simulator on its own port, IPN retries and reconciliation on short timers.
        "TICKETING_PAYSIM_PORT": str(free_port()),
        "TICKETING_PAYSIM_ENABLED": "true",
        "TICKETING_PAYSIM_IPN_RETRY_SECONDS": "0.5",
        "TICKETING_PAYMENT_RECONCILE_INTERVAL_SECONDS": "0.5",
        "TICKETING_PAYMENT_RECONCILE_LEAD_SECONDS": "2",
        "TICKETING_PAYMENT_RECONCILE_WINDOW_SECONDS": "120",
        "TICKETING_PAYMENT_REFUND_RETRY_SECONDS": "1",
        "TICKETING_SWEEPER_INTERVAL_SECONDS": "1",
        "TICKETING_CHECKOUT_WAIT_SECONDS": "30",
        "TICKETING_CHECKOUT_RATE_LIMIT": "0",
        "TICKETING_RATE_LIMIT_ENABLED": "false",  # the edge limits have their own tests (test_edge_limits.py)
        "TICKETING_LOG_LEVEL": "WARNING",
        # Mailer and DLQ ops: the test's own SMTP server, a short retry ladder, the keeper's port.
        "TICKETING_SMTP_HOST": "127.0.0.1",
        "TICKETING_SMTP_PORT": str(free_port()),
        "TICKETING_SMTP_TLS": "none",
        "TICKETING_MAILER_RETRY_DELAYS": "[1,2,3]",
        "TICKETING_MAILER_CLAIM_LEASE_SECONDS": "10",
        "TICKETING_SMTP_TIMEOUT_SECONDS": "5",  # a send ends before its claim (a settings rule)
        "TICKETING_OPS_PORT": str(free_port()),
        "TICKETING_DLQ_REPLAY_RATE": "200",
        "TICKETING_OPS_JOB_LEASE_SECONDS": "3",  # a killed job runner's job is resumed within seconds
        "TICKETING_SEARCH_CHECK_INTERVAL_SECONDS": "0.5",
    }


async def eventually(
    probe: Callable[[], Awaitable[T | None]], *, timeout: float = 15.0, interval: float = 0.05, what: str = "condition"
) -> T:
    """Poll ``probe`` until it returns a truthy value (returned) or the deadline passes (fails). A probe answers
    ``None`` (or anything falsy) for "not yet", so what this returns is never ``None``: its type drops the
    ``| None`` of the probe's."""
    deadline = time.monotonic() + timeout
    last: Any = None
    while time.monotonic() < deadline:
        last = await probe()
        if last:
            return last
        await asyncio.sleep(interval)
    raise AssertionError(f"timed out after {timeout}s waiting for {what}; last value: {last!r}")


async def metric(url: str, name: str, token: str | None = None) -> float:
    """The sum of every sample of a /metrics page whose line starts with ``name`` (a family, or one with labels)."""
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    async with httpx.AsyncClient(timeout=10) as c:
        r = await c.get(url, headers=headers)
    assert r.status_code == 200, r.text
    return sum(float(line.rsplit(" ", 1)[1]) for line in r.text.splitlines() if line.startswith(name))


@dataclass
class StockWatch:
    samples: int = 0
    violations: list[tuple[int, int, int]] = field(default_factory=list)  # (capacity, held, sold) oversold


@dataclass
class Stack:
    env: dict[str, str]
    settings: Settings
    base_url: str
    db: asyncpg.Pool
    amqp: aio_pika.abc.AbstractRobustConnection
    supervisor: Any
    smtp: Any = None  # tests.smtp_server.ScriptedSmtpServer
    names: Names = field(init=False)

    def __post_init__(self) -> None:
        self.names = Names(self.settings.prefix)

    def token(self, user: str, admin: bool = False) -> str:
        return issue_token(self.settings, user, f"{user}@example.com", ["admin"] if admin else [])

    def client(self, user: str = "buyer", admin: bool = False, **kw: Any) -> httpx.AsyncClient:
        return httpx.AsyncClient(
            base_url=self.base_url,
            headers={"Authorization": f"Bearer {self.token(user, admin)}"},
            timeout=60,
            **kw,
        )

    async def create_event(
        self,
        *,
        capacity: int = 100,
        per_user_limit: int = 10,
        hold_seconds: int = 900,
        price: int = 100_000,
        title: str = "Flash sale",
        extra_types: int = 0,
    ) -> dict[str, Any]:
        body = {
            "title": title,
            "venue": "Nhà hát Lớn",
            "city": "Hà Nội",
            "starts_at": "2030-01-01T20:00:00+07:00",
            "hold_seconds": hold_seconds,
            "ticket_types": [
                {"name": f"Type {i}", "price": price, "capacity": capacity, "per_user_limit": per_user_limit}
                for i in range(1 + extra_types)
            ],
        }
        async with self.client("organiser", admin=True) as c:
            r = await c.post("/admin/events", json=body)
        assert r.status_code == 201, r.text
        return r.json()  # type: ignore[no-any-return]

    async def stock(self, ticket_type_id: str) -> tuple[int, int, int]:
        row = await self.db.fetchrow(
            "SELECT capacity, held, sold FROM inventory.ticket_types WHERE id = $1", uuid.UUID(ticket_type_id)
        )
        assert row is not None
        return row["capacity"], row["held"], row["sold"]

    @contextlib.asynccontextmanager
    async def watching_stock(self, ticket_type_id: str) -> AsyncIterator[StockWatch]:
        """Sample the ticket type's stock every 10 ms while the block runs: every sample that ever shows more
        held and sold than the capacity is kept (the sale's invariant, seen from outside, while it happens)."""
        watch, done = StockWatch(), asyncio.Event()

        async def sample() -> None:
            while not done.is_set():
                capacity, held, sold = await self.stock(ticket_type_id)
                watch.samples += 1
                if held + sold > capacity:
                    watch.violations.append((capacity, held, sold))
                await asyncio.sleep(0.01)

        task = asyncio.create_task(sample())
        try:
            yield watch
        finally:
            done.set()
            await task

    async def run_cli(self, *args: str) -> tuple[int, str, str]:
        """``ticketing ARGS`` as a real process, as an operator runs it, on this run's database, broker and
        prefix: (exit code, stdout, stderr)."""
        proc = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "ticketing.cli",
            *args,
            env=self.env,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
        )
        out, err = await proc.communicate()
        return proc.returncode or 0, out.decode(), err.decode()

    async def order_status(self, order_id: str) -> str | None:
        return await self.db.fetchval(  # type: ignore[no-any-return]
            "SELECT status FROM inventory.orders WHERE id = $1", uuid.UUID(order_id)
        )

    async def queue_depth(self, queue: str) -> int:
        channel = await self.amqp.channel()
        try:
            q = await channel.declare_queue(queue, passive=True)
            return int(q.declaration_result.message_count or 0)
        finally:
            await channel.close()

    async def wait_ready(self, timeout: float = 60.0, services: tuple[str, ...] | None = None) -> None:
        """Until every service (or those named) answers /readyz 200; fails naming who is not ready and why."""
        ports = {
            "gateway": self.settings.gateway_port,
            "inventory": self.settings.inventory_port,
            "payment": self.settings.payment_port,
            "paysim": self.settings.paysim_port,
            "mailer": self.settings.mailer_port,
            "ops": self.settings.ops_port,
            "search": self.settings.search_port,
        }
        if services is not None:
            ports = {name: port for name, port in ports.items() if name in services}

        async def not_ready() -> dict[str, str]:
            """Each service that is not ready yet, with why (empty when all are)."""
            waiting: dict[str, str] = {}
            async with httpx.AsyncClient(timeout=2) as c:
                for name, port in ports.items():
                    proc = self.supervisor.procs.get(name)
                    if proc is not None and proc.poll() is not None:
                        raise AssertionError(f"service {name} exited with code {proc.returncode} while starting")
                    why = await not_ready_reason(c, port)
                    if why is not None:
                        waiting[name] = why
            return waiting

        async def ready() -> bool:
            return not await not_ready()

        try:
            await eventually(ready, timeout=timeout, interval=0.2, what="services ready")
        except AssertionError as exc:
            raise AssertionError(f"{exc}; not ready: {await not_ready()}") from None

    async def cleanup_redis(self) -> None:
        """Delete this run's keys (its prefix): the shared Redis is never flushed."""
        r = aioredis.from_url(self.settings.redis_url)
        try:
            async for key in r.scan_iter(match=f"{self.settings.prefix}*", count=1000):
                await r.delete(key)
        finally:
            await r.aclose()

    async def cleanup_broker(self, hold_seconds: tuple[int, ...]) -> None:
        """Delete every queue and exchange of the run's prefix: listed where the broker runs here, plus every
        name the topology knows (a remote broker cannot be listed without its management API)."""
        mailer_queue = mailer_notifications(tuple(self.settings.mailer_retry_delays))
        await broker_node.delete_prefix(
            self.settings.rabbitmq_url,
            self.settings.prefix,
            all_queue_names(self.names, hold_seconds, extra=(mailer_queue,)),
            [self.names.events_exchange],
        )


@contextlib.asynccontextmanager
async def running_stack(
    env: dict[str, str],
    settings: Settings,
    *,
    services: tuple[str, ...] | None = None,
    quiet: bool = True,
    hold_durations: tuple[int, ...] = (),
    ready_timeout: float = 60.0,
    pool_size: int = 5,
    app_name: str | None = None,
    delete_queues: bool = True,
    scale: dict[str, int] | None = None,
    restart: bool = True,
    stack_type: type[Stack] | None = None,
) -> AsyncIterator[Stack]:
    """The whole system (or ``services``) as real processes on the run's own database and prefix: migrated,
    the scripted SMTP server up before the mailer, every service ready; on exit the processes stopped and the
    run's database, queues (unless ``delete_queues`` is off: a broker node of the test's own goes with its
    node) and Redis keys removed. ``settings`` is what the services see (built from ``env``)."""
    from tests.smtp_server import ScriptedSmtpServer
    from ticketing.supervisor import Supervisor

    await create_database_if_missing(settings.database_url)
    await asyncio.to_thread(upgrade, settings.database_url)
    smtp = ScriptedSmtpServer(settings.smtp_port)
    smtp.start()
    supervisor = Supervisor(env=env, quiet=quiet, restart=restart, scale=scale or {})
    if services is not None:
        supervisor.services = services
    supervisor.start()
    dsn = make_url(settings.database_url).set(drivername="postgresql").render_as_string(hide_password=False)
    server_settings = {"application_name": app_name} if app_name else None
    db = await asyncpg.create_pool(dsn, min_size=1, max_size=pool_size, server_settings=server_settings)
    amqp = await aio_pika.connect_robust(settings.rabbitmq_url, timeout=10)
    stack = (stack_type or Stack)(
        env=env,
        settings=settings,
        base_url=f"http://127.0.0.1:{settings.gateway_port}",
        db=db,
        amqp=amqp,
        supervisor=supervisor,
        smtp=smtp,
    )
    try:
        await stack.wait_ready(ready_timeout, services)
        yield stack
    finally:
        await asyncio.to_thread(supervisor.stop)
        smtp.stop()
        with contextlib.suppress(Exception):  # a test may have stopped the broker under it
            await asyncio.wait_for(amqp.close(), 10)
        if delete_queues:
            await stack.cleanup_broker(hold_durations)
        await db.close()
        await stack.cleanup_redis()
        await drop_database(settings.database_url)
