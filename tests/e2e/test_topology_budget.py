"""What one deployment costs the broker (issue 13): quorum queues only where durability needs them."""

from __future__ import annotations

import asyncio
from typing import Any

import httpx

from shared.topology import DLQ_SERVICES, SERVICE_QUEUES
from tests.harness import Stack, eventually
from ticketing.broker_node import local_node_for


async def test_one_deployment_declares_quorum_queues_only_for_work_queues_and_dlqs(stack: Stack) -> None:
    event = await stack.create_event(capacity=5, hold_seconds=30)
    async with stack.client("buyer") as c:  # a hold: its delay queue is declared now
        r = await c.post(
            "/checkout", json={"items": [{"ticket_type_id": event["ticket_types"][0]["ticket_type_id"], "quantity": 1}]}
        )
    assert r.status_code == 201, r.text
    node = local_node_for(stack.settings.rabbitmq_url)
    assert node is not None, "the harness's broker runs on this machine"
    queues = await asyncio.to_thread(node.queues)
    assert queues is not None
    mine = [(name, kind) for name, _, kind in queues if name.startswith(stack.settings.prefix)]
    quorum = sorted(name for name, kind in mine if kind == "quorum")
    expected_quorum = len(DLQ_SERVICES) + sum(len(qs) for qs in SERVICE_QUEUES.values())
    assert len(quorum) == expected_quorum == 15, quorum
    assert all(".retry" not in n and "hold-delay" not in n for n in quorum)
    assert any("hold-delay" in name and kind == "classic" for name, kind in mine)


async def test_the_ops_services_readiness_warns_about_the_brokers_budget_without_going_unready(stack: Stack) -> None:
    # Every broker this suite runs on has fewer than RabbitMQ's recommended 65,536 open files (or is not on this
    # machine, which is a warning of its own): the warning must show, and the service must stay ready.
    async def warned() -> dict[str, Any] | None:
        async with httpx.AsyncClient(timeout=5) as c:
            r = await c.get(f"http://127.0.0.1:{stack.settings.ops_port}/readyz")
        body = r.json()
        return body if r.status_code == 200 and body.get("warnings") else None

    body = await eventually(warned, timeout=30, interval=0.5, what="the ops service's broker warning")
    assert any("open-file limit" in w for w in body["warnings"]), body
