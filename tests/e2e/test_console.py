"""The operator console (/ops) in a real headless browser (Playwright driving Debian's chromium) against the real
services: sign-in, a dead letter inspected, dry-run and replayed as a background job, purge with a typed
confirmation, a review payment accepted, the health view; refusals of a non-admin token and of a POST without
the CSRF token. And, over HTTP, a replay job of 500 letters running in chunks (and surviving a SIGKILL of ops)."""

from __future__ import annotations

import asyncio
import json
import os
import random
import re
import signal
import string
import uuid
from collections.abc import AsyncIterator
from typing import Any

import pytest
from playwright.async_api import Browser, BrowserContext, Page, async_playwright, expect

from services.gateway.console.session import COOKIE
from shared import health, topology
from tests.e2e.test_payment_ops import held_for_review
from tests.e2e.test_payments import checkout, wait_status
from tests.harness import Stack, eventually
from tests.mailer_support import cli, dead_letters, paid_order, publish, recipient

CHROMIUM = "/usr/bin/chromium"
WAIT_MS = 30_000


def _tag() -> str:
    return "".join(random.choices(string.ascii_lowercase, k=10))


@pytest.fixture(scope="module")
async def browser() -> AsyncIterator[Browser]:
    if not os.path.exists(CHROMIUM):  # noqa: ASYNC240 - once per module, before any page
        pytest.fail(f"{CHROMIUM} is missing: apt-get install -y chromium (make install does it as root)", pytrace=False)
    async with async_playwright() as pw:
        launched = await pw.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox"])
        try:
            yield launched
        finally:
            await launched.close()


async def _context(browser: Browser, stack: Stack) -> BrowserContext:
    context = await browser.new_context(base_url=stack.base_url)
    context.set_default_timeout(WAIT_MS)
    expect.set_options(timeout=WAIT_MS)
    return context


async def sign_in(browser: Browser, stack: Stack, user: str = "console-operator", admin: bool = True) -> Page:
    page = await (await _context(browser, stack)).new_page()
    await page.goto("/ops/login")
    await page.get_by_label("Admin bearer token").fill(stack.token(user, admin=admin))
    await page.get_by_role("button", name="Sign in").click()
    return page


async def _mailer_dead_letter(stack: Stack, word: str) -> tuple[str, dict[str, Any], Any]:
    """A ticket email the SMTP server refuses for good: the mailer dead-letters it, the keeper stores it."""
    to = recipient("console")
    stack.smtp.handler.fail_always(to, f"550 5.7.1 blocked by {word}")
    order = paid_order(to, tickets=1)
    mid = f"paid:{order.order_id}"
    await publish(stack, topology.ORDER_PAID, order, mid)
    rows = await eventually(lambda: dead_letters(stack, mid, "dead"), what="the dead letter")
    return to, {"message_id": mid, "order_id": str(order.order_id)}, rows[0]


async def test_sign_in_inspect_dry_run_and_replay_a_dead_letter_as_a_job(browser: Browser, stack: Stack) -> None:
    word = _tag()
    to, sent, row = await _mailer_dead_letter(stack, word)
    page = await sign_in(browser, stack)
    await expect(page).to_have_url(re.compile(r"/ops/dlq$"))
    mailer = page.locator("#queues tr[data-service=mailer]")
    await expect(mailer).to_contain_text(stack.names.dlq("mailer"))

    # The service's groups (by reason, numbers masked) and its messages; then the one letter.
    await mailer.get_by_role("link", name="mailer").click()
    await expect(page.locator("#groups")).to_contain_text(word)
    await page.locator(f"#messages tr[data-id='{row['id']}']").get_by_role("link").click()
    await expect(page.locator("h1")).to_have_text(f"Dead letter #{row['id']}")
    await expect(page.locator("#headers")).to_contain_text('"x-exception-type": "SmtpRejected"')
    await expect(page.locator("#headers")).to_contain_text("x-stack")
    await expect(page.locator("#body")).to_contain_text(sent["order_id"])
    await expect(page.locator("#history")).to_contain_text(f"#{row['id']}")
    await expect(page.locator("#summary")).to_contain_text(word)

    # Dry run: counted and audited, nothing changes.
    await page.get_by_role("button", name="Dry run this letter").click()
    await expect(page.locator(".preview")).to_contain_text("1 dead letter would be replayed")
    assert (await dead_letters(stack, sent["message_id"]))[0]["status"] == "dead"

    # Fix the cause, replay as a job: its progress polls itself up to DONE 1 / 1.
    stack.smtp.handler.fix(to)
    await page.get_by_role("button", name="Replay this letter").click()
    job = page.locator("article.job")
    await expect(job).to_have_attribute("data-status", "DONE")
    await expect(job.locator(".counts")).to_have_text("1 / 1")
    await expect(job.locator("progress")).to_have_attribute("value", "1")

    async def emailed() -> bool:
        return len(stack.smtp.handler.to(to)) == 1

    await eventually(emailed, what="the replayed ticket email")  # the effect: the email went out
    assert (await dead_letters(stack, sent["message_id"]))[0]["status"] == "replayed"
    await page.goto("/ops/dlq/mailer")
    await expect(page.locator("#groups")).not_to_contain_text(word)
    await expect(page.locator(f"#messages tr[data-id='{row['id']}']")).to_have_count(0)
    await page.goto("/ops/audit")
    await expect(page.locator("#audit")).to_contain_text("user:console-operator")
    await page.goto("/ops/jobs")
    await expect(page.locator("#jobs")).to_contain_text("DONE")
    await page.context.close()


async def test_purge_requires_typing_the_queue_name(browser: Browser, stack: Stack) -> None:
    _, sent, row = await _mailer_dead_letter(stack, _tag())
    page = await sign_in(browser, stack)
    await page.goto(f"/ops/dlq/messages/{row['id']}")
    await page.get_by_text("Purge this letter").first.click()  # opens the <details>
    confirm = page.get_by_label("Type the queue name to confirm")
    await confirm.fill("mailer")  # the service, not the queue's name
    await page.get_by_role("button", name="Purge this letter").click()
    await expect(page.get_by_role("alert")).to_contain_text(f"type the queue name {stack.names.dlq('mailer')}")
    assert (await dead_letters(stack, sent["message_id"]))[0]["status"] == "dead"

    await confirm.fill(stack.names.dlq("mailer"))
    await page.get_by_role("button", name="Purge this letter").click()
    await expect(page.locator("#purged-one")).to_contain_text("1 of 1 dead letters purged")
    assert (await dead_letters(stack, sent["message_id"]))[0]["status"] == "purged"
    await page.context.close()


async def test_a_payment_held_for_review_is_accepted_from_the_console(browser: Browser, stack: Stack) -> None:
    tt, order, ref = await held_for_review(stack, "console-review-buyer")
    page = await sign_in(browser, stack)
    await page.goto("/ops/payments")
    row = page.locator(f"#review tr[data-ref='{ref}']")
    await expect(row).to_contain_text(order["order_id"])
    await row.get_by_role("button", name="Accept").click()
    await expect(row).to_contain_text("Accepted")
    await wait_status(stack, order["order_id"], "PAID")
    assert await stack.stock(tt) == (4, 0, 1)
    await page.reload()
    await expect(page.locator(f"#review tr[data-ref='{ref}']")).to_have_count(0)
    await page.context.close()


async def test_the_health_page_lists_every_service_queue_depths_and_expiring_holds(
    browser: Browser, stack: Stack
) -> None:
    event = await stack.create_event(capacity=3, hold_seconds=30)
    order = await checkout(stack, "console-holder", event["ticket_types"][0]["ticket_type_id"])
    page = await sign_in(browser, stack)
    await page.goto("/ops/health")
    for name in ["gateway", *health.service_ports(stack.settings)]:
        await expect(page.locator(f"#services tr[data-service='{name}']")).to_contain_text("ready")
    await expect(page.locator("#services")).not_to_contain_text("NOT READY")
    await expect(page.locator("#queue-depths")).to_contain_text(stack.names.queue("inventory.checkout"))
    await expect(page.locator("#queue-depths")).to_contain_text(stack.names.dlq("ops"))
    await expect(page.locator("#expiring")).to_contain_text(order["order_id"])
    await page.context.close()


async def test_a_non_admin_token_is_refused_and_sees_no_data(browser: Browser, stack: Stack) -> None:
    page = await sign_in(browser, stack, user="just-a-buyer", admin=False)
    await expect(page.locator("#sign-in-error")).to_contain_text("no admin role")
    assert not [c for c in await page.context.cookies() if c["name"] == COOKIE]
    await expect(page.locator("#queues")).to_have_count(0)

    # Even holding a cookie with a buyer's token (or a forged one), no page shows data.
    for token, status in ((stack.token("just-a-buyer"), 403), ("not-a-jwt", 401)):
        await page.context.add_cookies([{"name": COOKIE, "value": token, "url": f"{stack.base_url}/ops"}])
        for path in ("/ops/dlq", "/ops/dlq/mailer", "/ops/payments", "/ops/health/live", "/ops/audit"):
            response = await page.goto(path)
            assert response is not None and response.status == status, (path, response and response.status)
            await expect(page.get_by_role("button", name="Sign in")).to_be_visible()
            await expect(page.locator("table")).to_have_count(0)
    anonymous = await (await _context(browser, stack)).new_page()
    response = await anonymous.goto("/ops/dlq")
    assert response is not None and response.status == 401
    headers = await response.all_headers()
    assert headers["x-frame-options"] == "DENY" and headers["cache-control"] == "no-store"
    assert "frame-ancestors 'none'" in headers["content-security-policy"]
    await expect(anonymous.locator("table")).to_have_count(0)
    await page.context.close()
    await anonymous.context.close()


async def test_a_post_without_the_csrf_token_is_refused(browser: Browser, stack: Stack) -> None:
    _, sent, row = await _mailer_dead_letter(stack, _tag())
    page = await sign_in(browser, stack)
    await expect(page).to_have_url(re.compile(r"/ops/dlq$"))
    form = {"ids": str(row["id"]), "confirm": stack.names.dlq("mailer")}
    # The session's cookie goes with these requests; the CSRF token does not (or a wrong one does).
    for extra in ({}, {"csrf": "0" * 64}):
        r = await page.request.post("/ops/dlq/mailer/purge", form={**form, **extra})
        assert r.status == 403, await r.text()
        assert "CSRF" in await r.text()
        r = await page.request.post("/ops/dlq/mailer/replay", form={"ids": str(row["id"]), **extra})
        assert r.status == 403
    assert (await dead_letters(stack, sent["message_id"]))[0]["status"] == "dead"
    # With the page's token (as its forms and htmx send it) the same purge goes through.
    csrf = await page.locator("input[name=csrf]").first.get_attribute("value")
    r = await page.request.post("/ops/dlq/mailer/purge", form={**form, "csrf": csrf or ""})
    assert r.status == 200, await r.text()
    assert (await dead_letters(stack, sent["message_id"]))[0]["status"] == "purged"
    await page.context.close()


# --- a long replay as a background job, over the JSON admin API ---------------------------------------------


async def _bulk_dead_letters(stack: Stack, group: str, queue: str, n: int) -> None:
    """``n`` stored dead letters of one group whose original queue is ``queue`` (as the keeper writes them)."""
    rows = [
        (
            f"{group}-{i}",
            "search",
            stack.names.dlq("search"),
            f"bulk:{group}:{i}",
            queue,
            group,
            json.dumps({"x-original-routing-key": "bulk"}),
            json.dumps({"correlation_id": None}),
            json.dumps({"n": i}).encode(),
        )
        for i in range(n)
    ]
    await stack.db.executemany(
        """INSERT INTO ops.dead_letters (fingerprint, service, dlq, message_id, original_queue, routing_key, reason,
               exception_type, group_key, attempts, headers, properties, body, failed_at)
           VALUES ($1, $2, $3, $4, $5, 'bulk', 'bulk test', 'Bulk', $6, 1, $7::jsonb, $8::jsonb, $9, now())""",
        rows,
    )


async def _job(stack: Stack, job_id: str) -> dict[str, Any]:
    async with stack.client("console-operator", admin=True) as admin:
        r = await admin.get(f"/admin/jobs/{job_id}")
    assert r.status_code == 200, r.text
    return r.json()  # type: ignore[no-any-return]


async def _replay_job(stack: Stack, group: str, rate: float | None = None) -> str:
    async with stack.client("console-operator", admin=True) as admin:
        r = await admin.post("/admin/jobs", json={"service": "search", "group": group, "rate": rate})
    assert r.status_code == 202, r.text
    assert r.headers["location"] == f"/admin/jobs/{r.json()['job_id']}"
    return r.json()["job_id"]  # type: ignore[no-any-return]


async def _sink(stack: Stack) -> tuple[str, Any]:
    """A classic queue of the run's own for the replayed letters to land in (no consumer: they are counted)."""
    name = stack.names.queue(f"test.console-sink.{uuid.uuid4().hex[:8]}")
    channel = await stack.amqp.channel()
    await channel.declare_queue(name, durable=True, arguments={"x-queue-type": "classic"})
    return name, channel


async def test_a_replay_of_500_letters_runs_as_a_background_job_in_chunks(stack: Stack) -> None:
    group, n = f"bulk{_tag()}", 500
    sink, channel = await _sink(stack)
    try:
        await _bulk_dead_letters(stack, group, sink, n)
        async with stack.client("console-operator", admin=True) as admin:  # a dry run is not a job
            refused = await admin.post("/admin/jobs", json={"service": "search", "group": group, "dry_run": True})
            assert refused.status_code == 422, refused.text
            assert (await admin.post("/admin/jobs", json={"service": "nope", "all": True})).status_code == 404
            assert (await admin.get(f"/admin/jobs/{uuid.uuid4()}")).status_code == 404
        async with stack.client("buyer") as buyer:
            assert (await buyer.post("/admin/jobs", json={"service": "search", "group": group})).status_code == 403
        job_id = await _replay_job(stack, group)
        seen: set[tuple[str, int]] = set()

        async def finished() -> dict[str, Any] | None:
            job = await _job(stack, job_id)
            seen.add((job["status"], job["done"]))
            return job if job["status"] in ("DONE", "FAILED") else None

        job = await eventually(finished, timeout=60, what="the replay job done")
        assert job["status"] == "DONE", job
        assert (job["done"], job["total"], job["affected"]) == (n, n, n)
        assert job["kind"] == "dlq_replay" and job["actor"] == "user:console-operator"
        assert job["started_at"] and job["finished_at"] and job["params"]["group"] == group
        partial = sorted(done for status, done in seen if status == "RUNNING" and 0 < done < n)
        assert partial, f"no progress seen between 0 and {n}: {sorted(seen)}"  # it ran in chunks, reported as it went
        assert all(done % 100 == 0 for done in partial), partial
        assert await stack.queue_depth(sink) == n
        statuses = await stack.db.fetch(
            "SELECT status, count(*) AS c FROM ops.dead_letters WHERE group_key = $1 GROUP BY status", group
        )
        assert {r["status"]: r["c"] for r in statuses} == {"replayed": n}
        shown = await cli(stack, "dlq", "jobs", job_id)  # `ticketing dlq jobs ID` reads the same view
        assert (shown["status"], shown["done"], shown["total"]) == ("DONE", n, n)
        assert any(j["id"] == job_id for j in await cli(stack, "dlq", "jobs", "--json"))
        audit = await stack.db.fetchrow("SELECT * FROM ops.audit_log WHERE id = $1", job["audit_id"])
        assert (audit["matched"], audit["affected"], audit["actor"]) == (n, n, "user:console-operator")
    finally:
        await channel.queue_delete(sink)
        await channel.close()


async def test_a_replay_job_resumes_after_the_ops_service_is_killed(stack: Stack) -> None:
    group, n = f"resume{_tag()}", 300
    sink, channel = await _sink(stack)
    try:
        await _bulk_dead_letters(stack, group, sink, n)
        job_id = await _replay_job(stack, group, rate=100)

        async def under_way() -> bool:
            job = await _job(stack, job_id)
            return job["status"] == "RUNNING" and job["done"] >= 100

        await eventually(under_way, timeout=30, what="the job under way")
        old = stack.supervisor.procs["ops"]
        os.kill(old.pid, signal.SIGKILL)
        await asyncio.to_thread(old.wait, 10)
        stack.supervisor.start_service("ops")  # as `ticketing up` restarts a service that died

        async def finished() -> dict[str, Any] | None:
            job = await _job(stack, job_id)
            return job if job["status"] in ("DONE", "FAILED") else None

        job = await eventually(finished, timeout=60, what="the resumed job done")
        assert stack.supervisor.procs["ops"].pid != old.pid  # restarted, and the new process finished it
        assert job["status"] == "DONE" and (job["done"], job["total"], job["affected"]) == (n, n, n), job
        replayed = await stack.db.fetchval(
            "SELECT count(*) FROM ops.dead_letters WHERE group_key = $1 AND status = 'replayed'", group
        )
        assert replayed == n
        # At least once: a letter published just before the kill and not yet marked is published again.
        assert n <= await stack.queue_depth(sink) <= n + 1
        await stack.wait_ready(services=("ops",))
    finally:
        await channel.queue_delete(sink)
        await channel.close()
