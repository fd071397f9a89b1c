"""Two inventory and two gateway processes (`ticketing up --scale inventory=2,gateway=2`): the invariants of one
process of each still hold.

The two inventories are competing consumers of `inventory.checkout`; each decides its batches in transactions
that lock the batch's ticket-type rows (in id order), so two batchers serialise on a hot row and never both
spend the same ticket. The two gateways share one API port through SO_REUSEPORT; a test that must reach both
keeps connections it has identified (each keep-alive connection stays with the process that accepted it).

The stack is this module's own (its own database, prefix and ports), so the session's one-process stack and
the other tests are untouched."""

from __future__ import annotations

import asyncio
import os
import random
import socket
import uuid
from collections import Counter
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any
from unittest import mock

import aiohttp
import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from shared.settings import Settings
from tests.harness import Stack, eventually, run_environment, running_stack
from ticketing.supervisor import REPLICA_PORT_STRIDE, replica_port

pytestmark = pytest.mark.slow
SCALE = {"inventory": 2, "gateway": 2}
HOLD_SECONDS = 900


def free_port_pair() -> int:
    """A port p with p and p + REPLICA_PORT_STRIDE both free: inventory-2 listens on the second."""
    for _ in range(100):
        with socket.socket() as a:
            a.bind(("127.0.0.1", 0))
            port = int(a.getsockname()[1])
            with socket.socket() as b:
                try:
                    b.bind(("127.0.0.1", port + REPLICA_PORT_STRIDE))
                except (OSError, OverflowError):
                    continue
                return port
    raise RuntimeError("no two adjacent free ports")


def samples(text: str, name: str) -> list[tuple[dict[str, str], float]]:
    return [
        (dict(s.labels), s.value)
        for family in text_string_to_metric_families(text)
        for s in family.samples
        if s.name == name
    ]


def pid_of(metrics_text: str) -> int:
    ((labels, _),) = samples(metrics_text, "ticketing_process_info")
    return int(labels["pid"])


def checkouts_served(metrics_text: str) -> float:
    """POST /checkout requests this gateway process answered (any status)."""
    return sum(
        v
        for labels, v in samples(metrics_text, "http_requests_total")
        if labels.get("handler") == "/checkout" and labels.get("method") == "POST"
    )


@dataclass
class Scaled(Stack):
    """The stack with two processes of inventory and of gateway (``SCALE``)."""

    @property
    def inventory_ports(self) -> dict[str, int]:
        base = self.settings.inventory_port
        return {name: replica_port(base, k) for k, name in enumerate(self.supervisor.replicas("inventory"), 1)}

    @property
    def gateway_pids(self) -> dict[int, str]:
        return {self.supervisor.procs[name].pid: name for name in self.supervisor.replicas("gateway")}

    async def create_ticket_type(self, capacity: int, per_user_limit: int) -> str:
        event = await self.create_event(
            capacity=capacity, per_user_limit=per_user_limit, hold_seconds=HOLD_SECONDS, title="Scaled sale"
        )
        return str(event["ticket_types"][0]["ticket_type_id"])

    async def inventory_metrics(self) -> dict[str, str]:
        async with httpx.AsyncClient(timeout=5) as c:
            return {
                name: (await c.get(f"http://127.0.0.1:{port}/metrics")).text
                for name, port in self.inventory_ports.items()
            }

    async def pinned_sessions(self, per_gateway: int) -> dict[str, list[aiohttp.ClientSession]]:
        """Sessions of one keep-alive connection each, ``per_gateway`` known to be on each gateway process
        (the kernel picks the process per connection: open connections until each has enough)."""
        admin = {"Authorization": f"Bearer {self.token('observer', admin=True)}"}
        pinned: dict[str, list[aiohttp.ClientSession]] = {name: [] for name in self.gateway_pids.values()}
        spare: list[aiohttp.ClientSession] = []

        async def enough() -> bool:
            session = aiohttp.ClientSession(
                self.base_url, connector=aiohttp.TCPConnector(limit=1), timeout=aiohttp.ClientTimeout(total=60)
            )
            async with session.get("/metrics", headers=admin) as r:
                assert r.status == 200
                name = self.gateway_pids[pid_of(await r.text())]
            (pinned[name] if len(pinned[name]) < per_gateway else spare).append(session)
            return all(len(s) >= per_gateway for s in pinned.values())

        try:
            await eventually(enough, timeout=30, interval=0, what=f"{per_gateway} connections to each gateway")
        finally:
            for session in spare:
                await session.close()
        return pinned

    async def gateway_metrics(self, sessions: dict[str, list[aiohttp.ClientSession]]) -> dict[str, str]:
        """Each gateway's /metrics, read over a connection pinned to it (and checked to still be)."""
        admin = {"Authorization": f"Bearer {self.token('observer', admin=True)}"}
        out: dict[str, str] = {}
        for name, group in sessions.items():
            async with group[0].get("/metrics", headers=admin) as r:
                text = await r.text()
            assert self.gateway_pids[pid_of(text)] == name, "a pinned connection moved to another process"
            out[name] = text
        return out


@pytest.fixture(scope="module")
async def scaled(server_settings: Settings) -> AsyncIterator[Scaled]:
    env = run_environment(server_settings)
    env["TICKETING_INVENTORY_PORT"] = str(free_port_pair())
    env["TICKETING_SEARCH_WRITETHROUGH_WAIT_SECONDS"] = "0"  # no search service here: don't wait for it
    with mock.patch.dict(os.environ, {k: v for k, v in env.items() if k.startswith("TICKETING_")}):
        settings = Settings()  # what the services see
    async with running_stack(
        env,
        settings,
        services=("inventory", "gateway"),
        hold_durations=(HOLD_SECONDS,),
        pool_size=4,
        scale=SCALE,
        restart=False,
        stack_type=Scaled,
    ) as s:
        assert isinstance(s, Scaled)
        await wait_ready(s)
        yield s


async def wait_ready(s: Scaled) -> None:
    """Every process ready: each inventory on its own port; each gateway over a connection it accepted."""
    ready: set[str] = set()

    async def all_ready() -> bool:
        for name, proc in s.supervisor.procs.items():
            assert proc.poll() is None, f"{name} exited with {proc.returncode} while starting"
        async with httpx.AsyncClient(timeout=2) as c:
            for name, port in s.inventory_ports.items():
                try:
                    if (await c.get(f"http://127.0.0.1:{port}/readyz")).status_code == 200:
                        ready.add(name)
                except httpx.HTTPError:
                    pass
        admin = {"Authorization": f"Bearer {s.token('observer', admin=True)}"}
        try:  # one connection: /readyz and /metrics are answered by the same process
            async with aiohttp.ClientSession(
                s.base_url, connector=aiohttp.TCPConnector(limit=1), timeout=aiohttp.ClientTimeout(total=2)
            ) as session:
                async with session.get("/readyz") as r:
                    is_ready = r.status == 200
                async with session.get("/metrics", headers=admin) as r:
                    if is_ready and r.status == 200:
                        ready.add(s.gateway_pids[pid_of(await r.text())])
        except aiohttp.ClientError:
            pass
        return ready >= set(s.supervisor.procs)

    await eventually(all_ready, timeout=90, interval=0.1, what="two inventories and two gateways ready")


async def test_flash_sale_on_two_inventories_and_two_gateways_sells_exactly_the_capacity(scaled: Scaled) -> None:
    tt = await scaled.create_ticket_type(capacity=100, per_user_limit=10)
    before = await scaled.inventory_metrics()
    buyers = [f"scaled-fan-{i}" for i in range(1000)]  # distinct buyers: only stock limits them
    tokens = {b: scaled.token(b) for b in buyers}
    random.Random(10).shuffle(buyers)
    # 64 connections at once: the kernel spreads them over both gateway processes.
    connector = aiohttp.TCPConnector(limit=64)
    async with aiohttp.ClientSession(
        scaled.base_url, connector=connector, timeout=aiohttp.ClientTimeout(total=120)
    ) as client:

        async def attempt(buyer: str) -> tuple[int, dict[str, Any]]:
            async with client.post(
                "/checkout",
                json={"items": [{"ticket_type_id": tt, "quantity": 1}]},
                headers={"Authorization": f"Bearer {tokens[buyer]}"},
            ) as r:
                return r.status, await r.json(content_type=None)

        async with scaled.watching_stock(tt) as watch:
            responses = await asyncio.gather(*(attempt(b) for b in buyers))

    codes = Counter(status for status, _ in responses)
    assert codes == {201: 100, 409: 900}, codes
    assert {body["reason"] for status, body in responses if status == 409} == {"sold_out"}
    assert watch.violations == [] and watch.samples > 0
    assert await scaled.stock(tt) == (100, 100, 0)
    held = await scaled.db.fetchval(
        "SELECT COALESCE(SUM(i.quantity), 0) FROM inventory.order_items i JOIN inventory.orders o "
        "ON o.id = i.order_id WHERE i.ticket_type_id = $1 AND o.status = 'PENDING'",
        uuid.UUID(tt),
    )
    assert held == 100

    # Both inventory processes decided checkouts of this sale (each counts on its own health port).
    after = await scaled.inventory_metrics()
    decided = {}
    for name in scaled.inventory_ports:
        assert samples(after[name], "ticketing_process_info")[0][0]["replica"] == name
        ((_, now),) = samples(after[name], "ticketing_hold_batch_size_sum")
        ((_, then),) = samples(before[name], "ticketing_hold_batch_size_sum")
        decided[name] = now - then
    assert all(n > 0 for n in decided.values()), decided


async def test_per_buyer_limit_holds_across_both_gateways_and_inventories(scaled: Scaled) -> None:
    tt = await scaled.create_ticket_type(capacity=100, per_user_limit=4)
    sessions = await scaled.pinned_sessions(per_gateway=10)
    try:
        before = await scaled.gateway_metrics(sessions)
        headers = {"Authorization": f"Bearer {scaled.token('greedy-scaled')}"}

        async def attempt(session: aiohttp.ClientSession) -> tuple[int, dict[str, Any]]:
            async with session.post(
                "/checkout", json={"items": [{"ticket_type_id": tt, "quantity": 1}]}, headers=headers
            ) as r:
                return r.status, await r.json(content_type=None)

        # 20 checkouts by one buyer at once, 10 through each gateway process.
        responses = await asyncio.gather(*(attempt(s) for group in sessions.values() for s in group))
        after = await scaled.gateway_metrics(sessions)
    finally:
        for group in sessions.values():
            for session in group:
                await session.close()
    codes = Counter(status for status, _ in responses)
    assert codes == {201: 4, 422: 16}, codes
    assert {body["reason"] for status, body in responses if status == 422} == {"limit_exceeded"}
    assert await scaled.stock(tt) == (100, 4, 0)
    holding = await scaled.db.fetchval(
        "SELECT quantity FROM inventory.user_holdings WHERE user_id = 'greedy-scaled' AND ticket_type_id = $1",
        uuid.UUID(tt),
    )
    assert holding == 4
    served = {name: checkouts_served(after[name]) - checkouts_served(before[name]) for name in after}
    assert served == {name: 10 for name in after}, served


async def test_an_idempotency_key_repeated_on_both_gateways_makes_one_order(scaled: Scaled) -> None:
    tt = await scaled.create_ticket_type(capacity=10, per_user_limit=10)
    sessions = await scaled.pinned_sessions(per_gateway=5)
    body = {"items": [{"ticket_type_id": tt, "quantity": 2}]}
    headers = {"Authorization": f"Bearer {scaled.token('retrying-scaled')}", "Idempotency-Key": "scaled-once"}
    try:

        async def attempt(session: aiohttp.ClientSession) -> tuple[int, dict[str, Any]]:
            async with session.post("/checkout", json=body, headers=headers) as r:
                return r.status, await r.json(content_type=None)

        # The same request 10 times at once, 5 through each gateway: the gateways may both find no order yet
        # and both inventories may decide it; the order id (from the key) makes it one order either way.
        responses = await asyncio.gather(*(attempt(s) for group in sessions.values() for s in group))
        # And once more through each gateway after the fact.
        responses += [await attempt(group[0]) for group in sessions.values()]
    finally:
        for group in sessions.values():
            for session in group:
                await session.close()
    assert {status for status, _ in responses} == {201}, responses
    assert len({r["order_id"] for _, r in responses}) == 1
    assert {r["status"] for _, r in responses} == {"PENDING"}
    orders = await scaled.db.fetchval("SELECT count(*) FROM inventory.orders WHERE user_id = 'retrying-scaled'")
    assert orders == 1
    assert await scaled.stock(tt) == (10, 2, 0)


async def test_a_replica_that_dies_is_restarted_and_the_sale_goes_on(scaled: Scaled) -> None:
    sup = scaled.supervisor
    victim = sup.procs["inventory-2"]
    victim.kill()
    victim.wait()
    stop = [False]
    sup.restart = True
    watcher = asyncio.create_task(asyncio.to_thread(sup.watch, stop))
    try:

        async def restarted() -> bool:
            proc = sup.procs["inventory-2"]
            if proc is victim or proc.poll() is not None:
                return False
            try:
                async with httpx.AsyncClient(timeout=2) as c:
                    port = scaled.inventory_ports["inventory-2"]
                    return (await c.get(f"http://127.0.0.1:{port}/readyz")).status_code == 200
            except httpx.HTTPError:
                return False

        await eventually(restarted, timeout=60, interval=0.2, what="inventory-2 restarted and ready")
    finally:
        stop[0] = True
        sup.restart = False
        await watcher
    tt = await scaled.create_ticket_type(capacity=3, per_user_limit=3)
    async with httpx.AsyncClient(
        base_url=scaled.base_url, timeout=60, headers={"Authorization": f"Bearer {scaled.token('after-restart')}"}
    ) as c:
        r = await c.post("/checkout", json={"items": [{"ticket_type_id": tt, "quantity": 3}]})
    assert r.status_code == 201, r.text
    assert await scaled.stock(tt) == (3, 3, 0)
    assert sorted(sup.procs) == ["gateway", "gateway-2", "inventory", "inventory-2"]
