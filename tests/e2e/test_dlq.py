"""Dead-letter operations on real queues: the keeper, grouping, dry runs, replay of a group, purge, the audit
log, the admin-only HTTP API and the `ticketing dlq` command (run as a real process)."""

from __future__ import annotations

import asyncio
import random
import string
import uuid
from collections.abc import Awaitable
from typing import Any

from shared import topology
from tests.harness import Stack, eventually
from tests.mailer_support import cli, dead_letters, paid_order, publish, recipient


def _tag() -> str:
    # Letters only: reasons are grouped with digits masked, so a unique word makes this test's own groups.
    return "".join(random.choices(string.ascii_lowercase, k=10))


async def _dead(stack: Stack, message_ids: list[str]) -> list[dict[str, Any]]:
    rows = []
    for mid in message_ids:
        found = await dead_letters(stack, mid)
        if not found:
            return []
        rows.append(dict(found[-1]))
    return rows


async def test_group_dry_run_replay_a_group_purge_and_audit(stack: Stack) -> None:
    handler = stack.smtp.handler
    policy_tag, spam_tag = _tag(), _tag()
    blocked = [recipient("grp-a") for _ in range(3)]
    spammy = [recipient("grp-b") for _ in range(2)]
    for to in blocked:
        handler.fail_always(to, f"550 5.7.1 blocked by {policy_tag}")
    for to in spammy:
        handler.fail_always(to, f"554 5.7.1 looks like {spam_tag}")
    orders = {to: paid_order(to, tickets=1) for to in blocked + spammy}
    for order in orders.values():
        await publish(stack, topology.ORDER_PAID, order, f"paid:{order.order_id}")
    ids = [f"paid:{o.order_id}" for o in orders.values()]
    rows = await eventually(lambda: _dead(stack, ids), what="five dead letters")

    async with stack.client("operator", admin=True) as admin:
        # Grouping: one group per (exception, routing, reason with ids and numbers masked).
        groups = (await admin.get("/admin/dlq/mailer/groups")).json()
        mine = {g["group_key"]: g for g in groups if policy_tag in g["sample_reason"] or spam_tag in g["sample_reason"]}
        by_tag = {("a" if policy_tag in g["sample_reason"] else "b"): g for g in mine.values()}
        assert by_tag["a"]["count"] == 3 and by_tag["b"]["count"] == 2
        assert by_tag["a"]["exception_type"] == "SmtpRejected" and by_tag["a"]["routing_key"] == topology.ORDER_PAID
        group_a, group_b = by_tag["a"]["group_key"], by_tag["b"]["group_key"]
        listed = (await admin.get("/admin/dlq/mailer/messages", params={"group": group_a})).json()
        assert len(listed) == 3

        # The queue overview: depth and age of the oldest dead letter, for every service's DLQ.
        queues = {q["service"]: q for q in (await admin.get("/admin/dlq")).json()}
        assert set(topology.DLQ_SERVICES) <= set(queues)
        assert queues["mailer"]["depth"] >= 5 and queues["mailer"]["oldest_age_seconds"] >= 0

        # Dry run: counts, changes nothing, is audited.
        r = await admin.post("/admin/dlq/mailer/replay", json={"group": group_a, "dry_run": True})
        assert r.status_code == 200 and r.json()["matched"] == 3 and r.json()["affected"] == 0
        assert all(row["status"] == "dead" for row in await _dead(stack, ids))
        assert sum(handler.attempts[to] for to in blocked) == 3

        # Fix the cause, then replay the group from the command line (a real `ticketing dlq` process).
        for to in blocked:
            handler.fix(to)
        result = await cli(
            stack, "dlq", "replay", "mailer", "--group", group_a, "--rate", "100", "--actor", "alice", "--json"
        )
        assert result["matched"] == 3 and result["affected"] == 3 and not result["dry_run"]
        await eventually(lambda: _all(all(len(handler.to(to)) == 1 for to in blocked)), what="replayed emails")
        assert all(not handler.to(to) for to in spammy)

        # Purge needs a confirmation; then it discards the other group (kept as 'purged' rows).
        r = await admin.post("/admin/dlq/mailer/purge", json={"group": group_b})
        assert r.status_code == 422
        r = await admin.post("/admin/dlq/mailer/purge", json={"group": group_b, "confirm": "mailer"})
        assert r.status_code == 200 and r.json()["affected"] == 2
        statuses = {row["message_id"]: row["status"] for row in await _dead(stack, ids)}
        assert sorted(statuses.values()) == ["purged", "purged", "replayed", "replayed", "replayed"]
        again = await admin.post("/admin/dlq/mailer/replay", json={"group": group_b})
        assert again.json()["matched"] == 0  # purged letters are never replayed

        # The audit log: who, what, when, how many (dry runs included).
        audit = (await admin.get("/admin/dlq/audit", params={"limit": 200})).json()
    entries = [a for a in audit if a["selector"].get("group") in (group_a, group_b)]
    summary = sorted((a["action"], a["actor"], a["dry_run"], a["matched"], a["affected"]) for a in entries)
    assert summary == sorted(
        [
            ("replay", "user:operator", True, 3, 0),
            ("replay", "alice", False, 3, 3),
            ("purge", "user:operator", False, 2, 2),
            ("replay", "user:operator", False, 0, 0),
        ]
    )
    assert all(a["at"] for a in entries)
    cli_audit = await cli(stack, "dlq", "audit", "--json", "--limit", "200")
    assert any(a["actor"] == "alice" and a["selector"]["group"] == group_a for a in cli_audit)
    assert len(rows) == 5


async def test_cli_lists_groups_shows_and_purges_with_dry_run(stack: Stack) -> None:
    tag = _tag()
    to = recipient("cli")
    stack.smtp.handler.fail_always(to, f"550 5.7.1 denied {tag}")
    order = paid_order(to)
    mid = f"paid:{order.order_id}"
    await publish(stack, topology.ORDER_PAID, order, mid)
    row = (await eventually(lambda: dead_letters(stack, mid), what="dead letter"))[0]

    queues = {q["service"]: q for q in await cli(stack, "dlq", "ls", "--json")}
    assert queues["mailer"]["depth"] >= 1 and queues["mailer"]["queue"] == stack.names.dlq("mailer")
    groups = await cli(stack, "dlq", "groups", "mailer", "--json")
    group = next(g for g in groups if tag in g["sample_reason"])
    shown = await cli(stack, "dlq", "show", str(row["id"]))
    assert shown["message_id"] == mid and shown["headers"]["x-exception-type"] == "SmtpRejected"
    assert shown["headers"]["x-original-routing-key"] == topology.ORDER_PAID and "x-stack" in shown["headers"]

    dry = await cli(stack, "dlq", "purge", "mailer", "--group", group["group_key"], "--dry-run", "--json")
    assert dry["matched"] == 1 and dry["affected"] == 0
    assert (await dead_letters(stack, mid))[0]["status"] == "dead"
    done = await cli(stack, "dlq", "purge", "mailer", "--group", group["group_key"], "--yes", "--json")
    assert done["affected"] == 1
    assert (await dead_letters(stack, mid))[0]["status"] == "purged"


async def test_every_services_dlq_is_kept_and_replayable_inventory_included(stack: Stack) -> None:
    # A malformed checkout command: inventory's chassis dead-letters it, the keeper stores it.
    mid = f"junk-checkout:{uuid.uuid4()}"
    await publish(stack, topology.CHECKOUT_REQUESTED, b'{"order_id": 42}', mid)
    first = (await eventually(lambda: dead_letters(stack, mid), what="inventory dead letter"))[0]
    assert first["service"] == "inventory" and first["exception_type"] == "ValidationError"
    assert first["original_queue"] == stack.names.queue("inventory.checkout")

    async with stack.client("operator", admin=True) as admin:
        r = await admin.post("/admin/dlq/inventory/replay", json={"ids": [first["id"]]})
        assert r.status_code == 200 and r.json()["affected"] == 1
        # Still malformed: it fails again and comes back, with its history, not lost.
        rows = await eventually(lambda: _at_least(dead_letters(stack, mid), 2), what="second death")
        assert rows is not None
        assert [x["status"] for x in rows] == ["replayed", "dead"] and rows[1]["replay_count"] == 1

        async with stack.client("buyer") as buyer:
            assert (await buyer.get("/admin/dlq")).status_code == 403
        assert (await admin.post("/admin/dlq/nope/replay", json={"all": True})).status_code == 404
        assert (await admin.post("/admin/dlq/inventory/replay", json={})).status_code == 422


async def _all(value: bool) -> bool:
    return value


async def _at_least(rows_coro: Awaitable[list[Any]], n: int) -> list[Any] | None:
    rows = await rows_coro
    return rows if len(rows) >= n else None


async def test_a_slow_replay_holds_no_row_locks_and_only_one_runs_per_service(stack: Stack) -> None:
    tag = _tag()
    blocked = [recipient("slow") for _ in range(4)]
    for to in blocked:
        stack.smtp.handler.fail_always(to, f"550 5.7.1 held {tag}")
    orders = [paid_order(to) for to in blocked]
    for order in orders:
        await publish(stack, topology.ORDER_PAID, order, f"paid:{order.order_id}")
    ids = [f"paid:{o.order_id}" for o in orders]
    rows = await eventually(lambda: _dead(stack, ids), what="four dead letters")
    row_ids = [r["id"] for r in rows]
    for to in blocked:
        stack.smtp.handler.fix(to)

    by_id = [arg for i in row_ids for arg in ("--id", str(i))]
    replay = cli(stack, "dlq", "replay", "mailer", *by_id, "--rate", "2", "--actor", "slow", "--json")
    slow = asyncio.create_task(replay)

    async def first_replayed() -> bool:
        return any(r["status"] == "replayed" for r in await _dead(stack, ids))

    await eventually(first_replayed, what="the replay under way")
    async with stack.db.acquire() as conn, conn.transaction():
        # Waiting letters are not locked while the replay paces itself: NOWAIT would raise if they were.
        locked = await conn.fetch("SELECT id FROM ops.dead_letters WHERE id = ANY($1) FOR UPDATE NOWAIT", row_ids)
        assert len(locked) == 4
    async with stack.client("operator", admin=True) as admin:
        second = await admin.post("/admin/dlq/mailer/replay", json={"ids": row_ids})
    assert second.status_code == 409 and second.json()["type"].endswith("replay-in-progress"), second.text
    result = await slow
    assert result["affected"] == 4 and not result.get("error")
    assert sorted(r["status"] for r in await _dead(stack, ids)) == ["replayed"] * 4
    await eventually(lambda: _all(all(len(stack.smtp.handler.to(to)) == 1 for to in blocked)), what="four emails")
