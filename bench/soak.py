"""Soak (issue 13, item 3): cycle the whole system many times and check that the broker stays healthy.

Each cycle: a database and prefix of its own, every service started as `ticketing up` starts them (the
Supervisor), a few checkouts (one paid through the simulator), then a stop: graceful (SIGTERM) or SIGKILL of
every service at a random moment, mid-start-up included. Then the broker must complete an AMQP handshake within
5 s (a wedged RabbitMQ accepts TCP and never sends ``Connection.Start``), the cycle deletes its prefix's queues,
exchanges, Redis keys and database (after a SIGKILL too), and the broker's queues are counted: they must not
grow from cycle to cycle.

    .venv/bin/python -m bench.soak [--cycles 200] [--broker own|shared] [--seed N]

``own`` (default) starts a RabbitMQ node of its own (ticketing/broker_node.py, file limit raised as for every
node we start); ``shared`` uses the configured broker (TICKETING_RABBITMQ_URL, the machine's by default).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import random
import signal
import statistics
import sys
import time
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import redis.asyncio as aioredis

from services.gateway.auth import issue_token
from services.paysim.client import pay_with_simulator
from shared.db import create_database_if_missing, drop_database
from shared.migrate import upgrade
from shared.settings import Settings
from shared.topology import Names, all_queue_names, mailer_notifications
from tests.harness import run_environment
from ticketing import broker_node
from ticketing.supervisor import SERVICES, Supervisor

HANDSHAKE_SECONDS = 5.0
READY_SECONDS = 60.0
HOLD_SECONDS = 900
PREFIX = "soak-"
MODES = ("graceful", "kill-in-start-up", "kill-in-traffic")
READY_PORTS = ("gateway", "inventory", "payment", "mailer", "ops", "search", "paysim")


@dataclass
class Cycle:
    n: int
    mode: str
    started_up: float | None = None  # seconds to every service ready; None if killed before
    traffic_ok: int = 0
    traffic_failed: int = 0
    handshake: str | None = None  # None: answered within HANDSHAKE_SECONDS; else why not (a wedge)
    queues_total: int | None = None  # every queue on the broker after the cycle's clean-up
    queues_ours: int | None = None  # queues of soak prefixes left after the clean-up
    queues_deleted: int = 0
    seconds: float = 0.0
    errors: list[str] = field(default_factory=list)


def cycle_environment(base: Settings) -> dict[str, str]:
    env = run_environment(base)
    run_id = env["TICKETING_PREFIX"].removeprefix("test-").rstrip(".")
    env["TICKETING_PREFIX"] = f"{PREFIX}{run_id}."
    env["TICKETING_DATABASE_URL"] = env["TICKETING_DATABASE_URL"].replace("ticketing_test_", "ticketing_soak_")
    env["TICKETING_BROKER_RETRY_MAX_SECONDS"] = "2"
    env["TICKETING_CHECKOUT_WAIT_SECONDS"] = "10"
    return env


def settings_for(env: dict[str, str]) -> Settings:
    with _environ(env):
        return Settings()


@contextlib.contextmanager
def _environ(env: dict[str, str]) -> Any:
    saved = {k: v for k, v in os.environ.items() if k.startswith("TICKETING_")}
    for k in saved:
        del os.environ[k]
    os.environ.update({k: v for k, v in env.items() if k.startswith("TICKETING_")})
    try:
        yield
    finally:
        for k in [k for k in os.environ if k.startswith("TICKETING_")]:
            del os.environ[k]
        os.environ.update(saved)


async def not_ready(settings: Settings) -> list[str]:
    waiting = []
    async with httpx.AsyncClient(timeout=2) as c:
        for name in READY_PORTS:
            port = getattr(settings, f"{name}_port")
            try:
                if (await c.get(f"http://127.0.0.1:{port}/readyz")).status_code != 200:
                    waiting.append(name)
            except httpx.HTTPError:
                waiting.append(name)
    return waiting


async def wait_ready(settings: Settings, sup: Supervisor, deadline: float) -> bool:
    while time.monotonic() < deadline:
        if not await not_ready(settings):
            return True
        for name, proc in sup.procs.items():
            if proc.poll() is not None:
                raise RuntimeError(f"{name} exited with {proc.returncode} during start-up")
        await asyncio.sleep(0.2)
    return False


async def traffic(settings: Settings, cycle: Cycle, checkouts: int = 3) -> None:
    """An event, a few checkouts with Idempotency-Keys, one of them paid through the simulator."""

    def client(user: str, admin: bool = False) -> httpx.AsyncClient:
        token = issue_token(settings, user, f"{user}@example.com", ["admin"] if admin else [])
        return httpx.AsyncClient(
            base_url=f"http://127.0.0.1:{settings.gateway_port}",
            headers={"Authorization": f"Bearer {token}"},
            timeout=20,
        )

    body = {
        "title": f"Soak {cycle.n}",
        "venue": "Nhà hát Lớn",
        "city": "Hà Nội",
        "starts_at": "2030-01-01T20:00:00+07:00",
        "hold_seconds": HOLD_SECONDS,
        "ticket_types": [{"name": "A", "price": 100_000, "capacity": 10, "per_user_limit": 2}],
    }
    async with client("soak-organiser", admin=True) as c:
        r = await c.post("/admin/events", json=body)
    if r.status_code != 201:
        cycle.traffic_failed += 1
        cycle.errors.append(f"create event: {r.status_code}")
        return
    tt = r.json()["ticket_types"][0]["ticket_type_id"]
    for i in range(checkouts):
        async with client(f"soak-buyer-{i}") as c:
            r = await c.post(
                "/checkout",
                json={"items": [{"ticket_type_id": tt, "quantity": 1}]},
                headers={"Idempotency-Key": f"soak-{cycle.n}-{i}"},
            )
        if r.status_code == 201:
            cycle.traffic_ok += 1
            if i == 0:
                await pay_with_simulator(r.json()["payment_url"])
        else:
            cycle.traffic_failed += 1
            cycle.errors.append(f"checkout: {r.status_code}")


def kill_all(sup: Supervisor) -> None:
    for proc in sup.procs.values():
        with contextlib.suppress(ProcessLookupError):
            os.kill(proc.pid, signal.SIGKILL)
    for proc in sup.procs.values():
        proc.wait(10)


async def clean_up(url: str, settings: Settings, cycle: Cycle) -> None:
    """Delete the cycle's queues and exchanges (listed on a local node, plus every name the topology knows),
    Redis keys and database: after a SIGKILL too."""
    names = Names(settings.prefix)
    known = all_queue_names(names, (HOLD_SECONDS,), extra=(mailer_notifications(tuple(settings.mailer_retry_delays)),))
    cycle.queues_deleted = await broker_node.delete_prefix(url, settings.prefix, known, [names.events_exchange])
    r = aioredis.from_url(settings.redis_url)
    try:
        async for key in r.scan_iter(match=f"{settings.prefix}*", count=1000):
            await r.delete(key)
    finally:
        await r.aclose()
    await drop_database(settings.database_url)


async def run_cycle(n: int, url: str, base: Settings, rng: random.Random) -> Cycle:
    cycle = Cycle(n=n, mode=rng.choice(MODES))
    started = time.monotonic()
    env = cycle_environment(base)
    env["TICKETING_RABBITMQ_URL"] = url
    settings = settings_for(env)
    sup = Supervisor(env=env, services=SERVICES if "paysim" in SERVICES else (*SERVICES, "paysim"), quiet=True)
    try:
        await create_database_if_missing(settings.database_url)
        await asyncio.to_thread(upgrade, settings.database_url)
        sup.start()
        t0 = time.monotonic()
        if cycle.mode == "kill-in-start-up":
            await asyncio.sleep(rng.uniform(0.0, 4.0))  # a random moment of the start-up (its median is ~5 s)
            if not await not_ready(settings):
                cycle.started_up = time.monotonic() - t0  # it was quicker than the kill
        else:
            if not await wait_ready(settings, sup, t0 + READY_SECONDS):
                cycle.errors.append(f"not ready after {READY_SECONDS:g} s: {await not_ready(settings)}")
            else:
                cycle.started_up = time.monotonic() - t0
                if cycle.mode == "kill-in-traffic":
                    with contextlib.suppress(TimeoutError):  # killed at a random moment of the traffic
                        await asyncio.wait_for(traffic(settings, cycle), timeout=rng.uniform(0.05, 2.0))
                else:
                    await traffic(settings, cycle)
    except Exception as exc:
        cycle.errors.append(f"{type(exc).__name__}: {exc}"[:300])
    finally:
        if cycle.mode == "graceful":
            await asyncio.to_thread(sup.stop)
        else:
            await asyncio.to_thread(kill_all, sup)
    cycle.handshake = await broker_node.amqp_handshake(url, HANDSHAKE_SECONDS)
    if cycle.handshake is None:
        try:
            await clean_up(url, settings, cycle)
        except Exception as exc:
            cycle.errors.append(f"clean-up: {type(exc).__name__}: {exc}"[:300])
        await count_queues(url, cycle)
    cycle.seconds = time.monotonic() - started
    return cycle


async def count_queues(url: str, cycle: Cycle) -> None:
    node = await asyncio.to_thread(broker_node.local_node_for, url)
    listed = await asyncio.to_thread(node.queues, 15) if node else None
    if listed is None:
        cycle.errors.append("could not list the broker's queues")
        return
    cycle.queues_total = len(listed)
    cycle.queues_ours = sum(1 for name, _, _ in listed if name.startswith(PREFIX))


def pct(values: list[float], q: float) -> float:
    values = sorted(values)
    return values[min(len(values) - 1, int(q * len(values)))] if values else float("nan")


def row(cycles: list[Cycle]) -> str:
    last = cycles[-1]
    startups = [c.started_up for c in cycles if c.started_up is not None]
    wedges = sum(1 for c in cycles if c.handshake is not None)
    modes = {m: sum(1 for c in cycles if c.mode == m) for m in MODES}
    errors = sum(1 for c in cycles if c.errors)
    return (
        f"| {len(cycles):>6} | {wedges:>6} | {last.queues_total!s:>11} | {last.queues_ours!s:>9} | "
        f"{pct(startups, 0.5):>9.1f} | {max(startups, default=float('nan')):>9.1f} | "
        f"{modes['graceful']:>4}/{modes['kill-in-start-up']:>4}/{modes['kill-in-traffic']:>4} | "
        f"{errors:>6} | {statistics.mean(c.seconds for c in cycles):>7.1f} |"
    )


HEADER = (
    "| cycles | wedges | queues left | soak left | start p50 | start max | grace/kill-start/kill-traffic "
    "| errors | s/cycle |\n|---|---|---|---|---|---|---|---|---|"
)


async def soak(cycles: int, broker: str, seed: int, out: str | None) -> int:
    base = Settings()
    node: broker_node.BrokerNode | None = None
    if broker == "own":
        node = broker_node.BrokerNode.create("ticketing-soak")
        await asyncio.to_thread(node.start)
        url = node.url
        print(f"own RabbitMQ node {node.name} on port {node.port} (open-file limit {node.check_fd_limit()})")
    else:
        url = base.rabbitmq_url
        limits = None
        local = await asyncio.to_thread(broker_node.local_node_for, url)
        if local is not None:
            limits = broker_node.fd_limits(local.pid)
        print(f"shared broker {url.rsplit('@', 1)[-1]} (open-file limit {limits[0] if limits else 'unknown'})")
    rng = random.Random(seed)
    done: list[Cycle] = []
    try:
        why = await broker_node.amqp_handshake(url, HANDSHAKE_SECONDS)
        if why is not None:
            print(f"the broker does not answer before the soak: {why}")
            return 2
        runs, swept = await broker_node.sweep_stale(url, PREFIX)
        if swept:
            print(f"swept {swept} queues left by {runs} earlier soak runs")
        before = Cycle(n=0, mode="-")
        await count_queues(url, before)
        print(f"queues on the broker before the first cycle: {before.queues_total}")
        print(HEADER, flush=True)
        for n in range(1, cycles + 1):
            c = await run_cycle(n, url, base, rng)
            done.append(c)
            if c.errors or c.handshake:
                print(f"  cycle {n} ({c.mode}): handshake={c.handshake} errors={c.errors}", flush=True)
            if n % 10 == 0 or n == cycles or c.handshake is not None:
                print(row(done), flush=True)
            if c.handshake is not None:
                print(f"WEDGE at cycle {n}: {c.handshake}")
                break
    finally:
        if out:
            record = {
                "broker": broker,
                "seed": seed,
                "date": datetime.now(UTC).isoformat(),
                "cycles": [asdict(c) for c in done],
            }
            await asyncio.to_thread(Path(out).write_text, json.dumps(record, indent=1))
        if node is not None:
            await asyncio.to_thread(node.stop)
    wedges = sum(1 for c in done if c.handshake is not None)
    grew = [c.queues_ours for c in done if c.queues_ours]
    print(f"{len(done)} cycles, {wedges} wedges, soak queues left after clean-up: {max(grew, default=0)}")
    return 1 if wedges or grew else 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.soak", description=__doc__.split("\n\n")[0])
    parser.add_argument("--cycles", type=int, default=200)
    parser.add_argument("--broker", choices=("own", "shared"), default="own")
    parser.add_argument("--seed", type=int, default=int(time.time()))
    parser.add_argument("--json", dest="out", help="write every cycle's record to this file")
    args = parser.parse_args(argv)
    print(f"soak: {args.cycles} cycles, broker {args.broker}, seed {args.seed}, {datetime.now(UTC):%Y-%m-%d %H:%M} UTC")
    return asyncio.run(soak(args.cycles, args.broker, args.seed, args.out))


if __name__ == "__main__":
    sys.exit(main())
