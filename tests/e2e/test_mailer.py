"""The mailer end to end: real RabbitMQ, PostgreSQL, mailer and DLQ keeper processes, and a real SMTP server
in the test whose answers each test scripts per recipient. Retry delays are 1, 2 and 3 s (tests/harness.py)."""

from __future__ import annotations

import asyncio
import contextlib
import pathlib
import signal
import sys
import uuid
from collections.abc import Awaitable
from functools import partial
from typing import Any, TypeVar

import aio_pika
import httpx

from services.mailer.sink import list_mail
from services.paysim.client import pay_with_simulator
from shared import topology
from shared.messages import OrderRefunded, OrderReleased, OrderStatus, PricedLine
from shared.topology import Names, all_queue_names, mailer_notifications
from tests.harness import Stack, eventually, free_port
from tests.mailer_support import dead_letters, email_row, paid_order, publish, recipient

T = TypeVar("T")


async def test_paid_order_gets_exactly_one_email_with_its_tickets_codes_and_qr_images(stack: Stack) -> None:
    to = recipient("paid")
    order = paid_order(to, locale="vi", tickets=3)
    await publish(stack, topology.ORDER_PAID, order, f"paid:{order.order_id}")

    mails = await eventually(lambda: _async(stack.smtp.handler.to(to)), what="the ticket email")
    assert len(mails) == 1
    mail = mails[0]
    assert "Hòa nhạc Mùa Thu" in str(mail.message["Subject"])
    text, html = mail.part("plain"), mail.part("html")
    for ticket in order.tickets:
        assert ticket.code in text and ticket.code in html
    assert "750.000 ₫" in text  # Vietnamese locale: VND with dot separators
    images = mail.images
    assert len(images) == 3 and all(png.startswith(b"\x89PNG") for _, png in images)
    for cid, _ in images:  # every inline image is referenced from the HTML by its Content-ID
        assert f"cid:{cid.strip('<>')}" in html
    assert mail.message["Message-ID"] == f"<paid.{order.order_id}@ticketing>"
    row = await eventually(lambda: _sent(stack, order.order_id), what="the email recorded as sent")
    assert row["attempts"] == 1 and row["recipient"] == to

    # A redelivery of the same event (same message id, as after a lost ack) sends nothing more.
    await publish(stack, topology.ORDER_PAID, order, f"paid:{order.order_id}")
    await eventually(lambda: _skipped(stack, order.order_id, 1), what="the duplicate to be recognised")
    assert len(stack.smtp.handler.to(to)) == 1


async def test_english_locale_and_expiry_and_refund_emails(stack: Stack) -> None:
    to = recipient("locale")
    order = paid_order(to, locale="en-GB", tickets=1)
    expired = OrderReleased(
        order_id=uuid.uuid4(),
        user_id="b",
        user_email=to,
        locale="en",
        status=OrderStatus.EXPIRED,
        items=[PricedLine(ticket_type_id=uuid.uuid4(), quantity=2, unit_price=100_000)],
    )
    refunded = OrderRefunded(
        order_id=uuid.uuid4(), user_id="b", user_email=to, locale="vi", amount=300_000, reason="late payment, sold out"
    )
    await publish(stack, topology.ORDER_PAID, order, f"paid:{order.order_id}")
    await publish(stack, topology.ORDER_EXPIRED, expired, f"expired:{expired.order_id}")
    await publish(stack, topology.ORDER_REFUNDED, refunded, f"refunded:{refunded.order_id}")

    mails = await eventually(lambda: _mails(stack, to, 3), what="three emails")
    assert mails is not None
    subjects = sorted(str(m.message["Subject"]) for m in mails)
    assert any(s.startswith("Your tickets for") for s in subjects)
    assert any("has expired" in s for s in subjects)
    assert any("hoàn tiền" in s for s in subjects)
    refund_mail = next(m for m in mails if "hoàn tiền" in str(m.message["Subject"]))
    assert "300.000 ₫" in refund_mail.part("plain")
    paid_mail = next(m for m in mails if str(m.message["Subject"]).startswith("Your tickets"))
    assert "Total: 250,000 VND" in paid_mail.part("plain")


async def test_smtp_4xx_twice_then_one_email_after_retries(stack: Stack) -> None:
    to = recipient("busy")
    stack.smtp.handler.script(to, ["451 4.3.0 Mail server busy, try later", "421 4.7.0 Try again later"])
    order = paid_order(to)
    await publish(stack, topology.ORDER_PAID, order, f"paid:{order.order_id}")

    mails = await eventually(lambda: _async(stack.smtp.handler.to(to)), timeout=30, what="delivery after retries")
    assert len(mails) == 1
    assert stack.smtp.handler.attempts[to] == 3
    row = await eventually(lambda: _sent(stack, order.order_id), what="sent")
    assert row["attempts"] == 3
    assert await dead_letters(stack, f"paid:{order.order_id}") == []


async def test_smtp_5xx_dead_letters_then_replay_after_the_fix_delivers_exactly_once(stack: Stack) -> None:
    to = recipient("reject")
    stack.smtp.handler.fail_always(to, "550 5.1.1 Mailbox unavailable")
    order = paid_order(to)
    message_id = f"paid:{order.order_id}"
    await publish(stack, topology.ORDER_PAID, order, message_id)

    rows = await eventually(lambda: dead_letters(stack, message_id), what="the dead letter")
    dead = rows[0]
    assert dead["service"] == "mailer" and dead["status"] == "dead"
    assert dead["exception_type"] == "SmtpRejected"
    assert "550" in dead["reason"] and "Mailbox unavailable" in dead["reason"]
    assert dead["attempts"] == 1  # permanent: the ladder was skipped
    assert dead["routing_key"] == topology.ORDER_PAID
    assert dead["original_queue"] == stack.names.queue("mailer.notifications")
    assert stack.smtp.handler.attempts[to] == 1

    stack.smtp.handler.fix(to)
    async with stack.client("operator", admin=True) as c:
        r = await c.post("/admin/dlq/mailer/replay", json={"ids": [dead["id"]]})
    assert r.status_code == 200, r.text
    assert r.json()["affected"] == 1
    mails = await eventually(lambda: _async(stack.smtp.handler.to(to)), what="the replayed email")
    assert len(mails) == 1
    await eventually(lambda: _sent(stack, order.order_id), what="sent")
    assert (await dead_letters(stack, message_id))[0]["status"] == "replayed"

    # Replaying (republishing as the replay does) the already-sent message sends nothing more.
    await publish(
        stack,
        "",
        order,
        message_id,
        queue=stack.names.queue("mailer.notifications"),
        headers={"x-original-routing-key": topology.ORDER_PAID, "x-replay-count": 2},
    )
    await eventually(lambda: _skipped(stack, order.order_id, 1), what="the replay to be recognised")
    assert len(stack.smtp.handler.to(to)) == 1


async def test_transient_failures_exhaust_the_ladder_then_dead_letter_with_attempts(stack: Stack) -> None:
    to = recipient("down")
    stack.smtp.handler.fail_always(to, "452 4.2.2 Mailbox full")
    order = paid_order(to)
    message_id = f"paid:{order.order_id}"
    await publish(stack, topology.ORDER_PAID, order, message_id)

    rows = await eventually(lambda: dead_letters(stack, message_id), timeout=40, what="dead letter after retries")
    assert rows[0]["attempts"] == 4  # the first try and three retries (1 s, 2 s, 3 s)
    assert rows[0]["reason"].startswith("retries exhausted") and "452" in rows[0]["reason"]
    assert rows[0]["exception_type"] == "SMTPDataError"
    assert stack.smtp.handler.attempts[to] == 4


async def test_a_replayed_message_that_fails_again_comes_back_with_its_history(stack: Stack) -> None:
    to = recipient("again")
    stack.smtp.handler.fail_always(to, "554 5.7.1 Rejected by policy")
    order = paid_order(to)
    message_id = f"paid:{order.order_id}"
    await publish(stack, topology.ORDER_PAID, order, message_id)
    first = (await eventually(lambda: dead_letters(stack, message_id), what="first death"))[0]

    async with stack.client("operator", admin=True) as c:
        r = await c.post("/admin/dlq/mailer/replay", json={"ids": [first["id"]]})
        assert r.status_code == 200 and r.json()["affected"] == 1
        rows = await eventually(lambda: _async_len(dead_letters(stack, message_id), 2), what="second death")
        assert rows is not None
        second = rows[1]
        assert second["status"] == "dead" and second["replay_count"] == 1
        shown = (await c.get(f"/admin/dlq/messages/{second['id']}")).json()
    assert [h["status"] for h in shown["history"]] == ["replayed", "dead"]
    assert shown["headers"]["x-replayed-from"] == first["id"]
    assert shown["body"]["order_id"] == str(order.order_id)


async def test_malformed_messages_dead_letter_and_the_queue_keeps_flowing(stack: Stack) -> None:
    bad_json_id, bad_shape_id = f"junk:{uuid.uuid4()}", f"junk:{uuid.uuid4()}"
    await publish(stack, topology.ORDER_PAID, b"{not json at all", bad_json_id)
    await publish(stack, topology.ORDER_PAID, b'{"order_id": "not-a-uuid", "tickets": []}', bad_shape_id)
    to = recipient("after-junk")
    order = paid_order(to)
    await publish(stack, topology.ORDER_PAID, order, f"paid:{order.order_id}")

    await eventually(lambda: _async(stack.smtp.handler.to(to)), what="the good message behind the junk")
    for mid in (bad_json_id, bad_shape_id):
        rows = await eventually(partial(dead_letters, stack, mid), what=f"dead letter {mid}")
        assert rows[0]["exception_type"] == "ValidationError"
        assert rows[0]["reason"].startswith("invalid message")


async def test_an_order_without_a_recipient_is_a_permanent_data_error(stack: Stack) -> None:
    order = paid_order("not-an-address")
    message_id = f"paid:{order.order_id}"
    await publish(stack, topology.ORDER_PAID, order, message_id)
    rows = await eventually(lambda: dead_letters(stack, message_id), what="dead letter")
    assert rows[0]["exception_type"] == "EmailDataError" and rows[0]["attempts"] == 1


async def test_a_title_with_a_line_break_still_gets_its_one_email_without_injected_headers(stack: Stack) -> None:
    to = recipient("crlf")
    order = paid_order(to).model_copy(update={"event_title": "Hòa nhạc\r\nBcc: attacker@example.com"})
    await publish(stack, topology.ORDER_PAID, order, f"paid:{order.order_id}")
    row = await eventually(lambda: _sent(stack, order.order_id), what="the email sent")
    mails = stack.smtp.handler.to(to)
    assert len(mails) == 1 and row["attempts"] == 1  # sent at once: not retried as a transient failure
    assert "Hòa nhạc Bcc: attacker@example.com" in str(mails[0].message["Subject"])
    assert mails[0].message["Bcc"] is None and not stack.smtp.handler.to("attacker@example.com")


# --- probes -----------------------------------------------------------------------------------------------


async def _async(value: T) -> T:
    return value


async def _mails(stack: Stack, to: str, n: int) -> list[Any] | None:
    mails = stack.smtp.handler.to(to)
    return mails if len(mails) >= n else None


async def _async_len(rows_coro: Awaitable[list[Any]], n: int) -> list[Any] | None:
    rows = await rows_coro
    return rows if len(rows) >= n else None


async def _sent(stack: Stack, order_id: uuid.UUID, kind: str = "paid") -> Any:
    row = await email_row(stack, order_id, kind)
    return row if row is not None and row["status"] == "sent" else None


async def _skipped(stack: Stack, order_id: uuid.UUID, n: int) -> object:
    row = await email_row(stack, order_id)
    return row is not None and row["duplicates_skipped"] >= n


async def test_without_an_smtp_host_the_embedded_sink_keeps_mail_for_ticketing_mail(
    stack: Stack, tmp_path: pathlib.Path
) -> None:
    """What `ticketing up` does on a fresh machine: a mailer with no SMTP host starts its own sink."""
    prefix = f"{stack.settings.prefix}sink."
    health_port = free_port()
    env = {
        **stack.env,
        "TICKETING_SMTP_HOST": "",
        "TICKETING_PREFIX": prefix,
        "TICKETING_MAILER_PORT": str(health_port),
        "TICKETING_MAIL_SINK_PORT": str(free_port()),
        "TICKETING_MAIL_SINK_DIR": str(tmp_path / "mail"),
    }
    proc = await asyncio.create_subprocess_exec(sys.executable, "-m", "services.mailer", env=env)
    names = Names(prefix)
    try:
        # Ready = its queues are declared *and bound* and it consumes (a bare queue may not be bound yet).
        await eventually(lambda: _ready(health_port), timeout=30, interval=0.2, what="the second mailer ready")
        to = recipient("sink")
        order = paid_order(to, locale="en")
        channel = await stack.amqp.channel(publisher_confirms=True)
        exchange = await channel.get_exchange(names.events_exchange)
        await exchange.publish(
            aio_pika.Message(
                order.model_dump_json().encode(), message_id=f"paid:{order.order_id}", content_type="application/json"
            ),
            routing_key=topology.ORDER_PAID,
            mandatory=True,
        )
        await channel.close()
        await eventually(lambda: _async(list_mail(tmp_path / "mail")), what="mail in the sink")

        out = await _run_cli(env, "mail", "ls")
        assert to in out and "Your tickets" in out
        shown = await _run_cli(env, "mail", "show", "1")
        assert order.tickets[0].code in shown and "Inline images: <qr-" in shown
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            await asyncio.wait_for(proc.wait(), 20)
        except TimeoutError:
            proc.kill()
            await proc.wait()
        channel = await stack.amqp.channel()
        for name in all_queue_names(names, extra=(mailer_notifications(tuple(stack.settings.mailer_retry_delays)),)):
            with contextlib.suppress(Exception):
                await channel.queue_delete(name)
        with contextlib.suppress(Exception):
            await channel.exchange_delete(names.events_exchange)


async def _ready(port: int) -> bool:
    try:
        async with httpx.AsyncClient(timeout=2) as c:
            return (await c.get(f"http://127.0.0.1:{port}/readyz")).status_code == 200
    except httpx.HTTPError:
        return False


async def _run_cli(env: dict[str, str], *args: str) -> str:
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "ticketing.cli",
        *args,
        env={**env, "COLUMNS": "250"},
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    out, err = await proc.communicate()
    assert proc.returncode == 0, err.decode()
    return out.decode()


# --- the whole flow: checkout -> VNPAY simulator -> inventory's order.paid / order.expired -> email -------------


async def test_a_real_paid_order_gets_one_email_with_the_issued_tickets(stack: Stack) -> None:
    buyer = f"mail-buyer-{uuid.uuid4().hex[:6]}"
    to = f"{buyer}@example.com"  # the token's email claim, carried by the checkout into order.paid
    event = await stack.create_event(capacity=5, price=150_000, title="Đêm nhạc Trịnh Công Sơn")
    tt = event["ticket_types"][0]["ticket_type_id"]
    async with stack.client(buyer) as c:
        r = await c.post("/checkout", json={"items": [{"ticket_type_id": tt, "quantity": 2}]})
    assert r.status_code == 201, r.text
    order = r.json()
    await pay_with_simulator(order["payment_url"])

    mails = await eventually(lambda: _mails(stack, to, 1), timeout=30, what="the ticket email of a paid order")
    assert mails is not None and len(mails) == 1
    codes = [
        row["code"]
        for row in await stack.db.fetch(
            "SELECT code FROM inventory.tickets WHERE order_id = $1", uuid.UUID(order["order_id"])
        )
    ]
    assert len(codes) == 2
    text, html = mails[0].part("plain"), mails[0].part("html")
    assert "Đêm nhạc Trịnh Công Sơn" in text and "300.000 ₫" in text
    for code in codes:
        assert code in text and code in html
    assert len(mails[0].images) == 2
    await eventually(lambda: _sent(stack, uuid.UUID(order["order_id"])), what="recorded as sent")
    assert len(stack.smtp.handler.to(to)) == 1


async def test_an_expired_hold_gets_one_expiry_email(stack: Stack) -> None:
    buyer = f"mail-late-{uuid.uuid4().hex[:6]}"
    to = f"{buyer}@example.com"
    event = await stack.create_event(capacity=5, hold_seconds=1)
    tt = event["ticket_types"][0]["ticket_type_id"]
    async with stack.client(buyer) as c:
        r = await c.post("/checkout", json={"items": [{"ticket_type_id": tt, "quantity": 1}]})
    assert r.status_code == 201, r.text
    mails = await eventually(lambda: _mails(stack, to, 1), timeout=30, what="the expiry email")
    assert mails is not None and len(mails) == 1
    assert "hết hạn" in str(mails[0].message["Subject"])  # the token's locale is Vietnamese
    assert r.json()["order_id"] in mails[0].part("plain")
