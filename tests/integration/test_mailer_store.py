"""The mailer's exactly-once record against the run's real PostgreSQL: claim, lease, failure, sent."""

from __future__ import annotations

import asyncio
import uuid

import httpx

from services.mailer import domain
from services.mailer.store import Claim, EmailStore
from shared.db import make_engine
from tests.harness import Stack, eventually
from tests.mailer_support import paid_order, recipient


async def test_claim_lease_failure_and_sent(stack: Stack) -> None:
    engine = make_engine(stack.settings.database_url, pool_size=2)
    try:
        store = EmailStore(engine, lease_seconds=60)
        spec = domain.for_paid(paid_order(recipient("store")))
        assert await store.claim(spec, "m1", "s") is Claim.GRANTED
        # A second delivery while the first is sending (lease alive) must not send.
        assert await store.claim(spec, "m1", "s") is Claim.IN_FLIGHT
        await store.mark_failed(spec, "SMTPDataError: 451")
        assert await store.claim(spec, "m1", "s") is Claim.GRANTED  # a failed attempt may be retried
        # The worker dies mid-send: once the lease is over, another delivery may claim it (the documented
        # window). A store with a zero lease sees every earlier claim as expired, without waiting.
        assert await EmailStore(engine, lease_seconds=0).claim(spec, "m1", "s") is Claim.GRANTED
        await store.mark_sent(spec, "250 OK")
        assert await store.claim(spec, "m1", "s") is Claim.ALREADY_SENT
        assert await store.claim(spec, "m2", "s") is Claim.ALREADY_SENT  # a replay with another message id
        row = await stack.db.fetchrow(
            "SELECT * FROM mailer.emails WHERE order_id = $1 AND kind = 'paid'", uuid.UUID(spec.order_id)
        )
        assert row["status"] == "sent" and row["attempts"] == 3 and row["duplicates_skipped"] == 2
    finally:
        await engine.dispose()


async def test_concurrent_claims_grant_exactly_one(stack: Stack) -> None:
    engine = make_engine(stack.settings.database_url, pool_size=8)
    try:
        store = EmailStore(engine, lease_seconds=60)
        spec = domain.for_paid(paid_order(recipient("race")))
        claims = await asyncio.gather(*(store.claim(spec, "m", "s") for _ in range(8)))
        assert claims.count(Claim.GRANTED) == 1 and claims.count(Claim.IN_FLIGHT) == 7
    finally:
        await engine.dispose()


async def test_mailer_and_ops_expose_their_metrics(stack: Stack) -> None:
    async with httpx.AsyncClient(timeout=5) as c:
        mailer = (await c.get(f"http://127.0.0.1:{stack.settings.mailer_port}/metrics")).text
        ops = (await c.get(f"http://127.0.0.1:{stack.settings.ops_port}/metrics")).text
    for name in (
        "ticketing_emails_sent_total",
        "ticketing_emails_failed_total",
        "ticketing_emails_duplicate_skipped_total",
        "ticketing_messages_retried_total",
        "ticketing_messages_dead_lettered_total",
    ):
        assert f"# TYPE {name} counter" in mailer
    for name in ("ticketing_dead_letters_stored_total", "ticketing_dead_letters_replayed_total"):
        assert f"# TYPE {name} counter" in ops

    async def gauge_exported() -> bool:  # the gauge an alert watches (refreshed by the keeper)
        async with httpx.AsyncClient(timeout=5) as c:
            text = (await c.get(f"http://127.0.0.1:{stack.settings.ops_port}/metrics")).text
        return 'ticketing_dead_letters_waiting{service="mailer"}' in text

    await eventually(gauge_exported, what="the DLQ depth gauge")
