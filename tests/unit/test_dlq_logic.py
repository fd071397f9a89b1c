"""Pure dead-letter logic: turning AMQP deliveries into rows, grouping keys, selectors, replay headers."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from types import SimpleNamespace
from typing import Any

import pytest

from services.ops import dlq
from shared import dead_letters


def delivery(headers: dict[str, Any], body: bytes = b"{}", message_id: str = "m-1") -> Any:
    return SimpleNamespace(
        headers=headers,
        body=body,
        message_id=message_id,
        routing_key="x.dlq",
        content_type="application/json",
        correlation_id="c-1",
        reply_to=None,
        app_id="ticketing-mailer",
        type=None,
        timestamp=datetime(2030, 1, 1, tzinfo=UTC),
        delivery_mode=2,
        exchange="",
    )


def test_a_chassis_dead_letter_keeps_reason_routing_and_attempts() -> None:
    row = dlq.from_amqp(
        "mailer",
        "p.mailer.dlq",
        delivery(
            {
                "x-reason": "SMTP refused: 550 no such user",
                "x-exception-type": "SmtpRejected",
                "x-attempts": 1,
                "x-original-queue": "p.mailer.notifications",
                "x-original-routing-key": "order.paid",
                "x-original-exchange": "p.ticketing.events",
                "x-failed-at": "2030-01-01T00:00:00+00:00",
            }
        ),
    )
    assert row["original_queue"] == "p.mailer.notifications" and row["routing_key"] == "order.paid"
    assert row["exception_type"] == "SmtpRejected" and row["attempts"] == 1
    assert row["failed_at"] == datetime(2030, 1, 1, tzinfo=UTC)
    assert json.loads(row["properties"])["correlation_id"] == "c-1"


def test_a_broker_dead_letter_is_understood_from_x_death() -> None:
    row = dlq.from_amqp(
        "inventory",
        "p.inventory.dlq",
        delivery(
            {
                "x-first-death-reason": "delivery_limit",
                "x-first-death-queue": "p.inventory.checkout",
                "x-death": [
                    {
                        "queue": "p.inventory.checkout",
                        "reason": "delivery_limit",
                        "count": 6,
                        "routing-keys": [b"checkout.requested"],
                        "exchange": b"p.ticketing.events",
                        "time": datetime(2030, 1, 1, tzinfo=UTC),
                    }
                ],
            }
        ),
    )
    assert row["original_queue"] == "p.inventory.checkout"
    assert row["routing_key"] == "checkout.requested" and row["exception_type"] == "delivery_limit"
    assert "delivery_limit" in row["reason"] and row["attempts"] == 6


def test_the_same_delivery_has_the_same_fingerprint_and_a_new_death_a_new_one() -> None:
    headers = {"x-reason": "boom", "x-failed-at": "2030-01-01T00:00:00+00:00"}
    a = dlq.from_amqp("mailer", "q", delivery(headers))
    b = dlq.from_amqp("mailer", "q", delivery(dict(headers)))
    c = dlq.from_amqp("mailer", "q", delivery({**headers, "x-failed-at": "2030-01-01T00:00:05+00:00"}))
    assert a["fingerprint"] == b["fingerprint"] != c["fingerprint"]


def test_groups_ignore_ids_and_numbers_but_not_the_failure() -> None:
    a = dlq.group_key(
        "mailer",
        "q",
        "order.paid",
        "SmtpRejected",
        "SMTP refused the paid email for 6f1d8f3e-2c1b-4d8e-9a53-6c0a3f2b9e11 after 1 attempt",
    )
    b = dlq.group_key(
        "mailer",
        "q",
        "order.paid",
        "SmtpRejected",
        "SMTP refused the paid email for 11111111-2222-3333-4444-555555555555 after 3 attempt",
    )
    c = dlq.group_key("mailer", "q", "order.paid", "EmailDataError", "no deliverable recipient")
    assert a == b != c


def test_a_selector_names_exactly_one_thing() -> None:
    assert dead_letters.Selector(ids=(1, 2)).where()[1] == {"ids": [1, 2]}
    assert dead_letters.Selector(group="abc").where()[1] == {"grp": "abc"}
    assert dead_letters.Selector(everything=True).where() == ("TRUE", {})
    for bad in ({}, {"ids": (1,), "group": "g"}, {"group": "g", "everything": True}):
        with pytest.raises(ValueError, match="exactly one"):
            dead_letters.Selector(**bad)


def test_replay_headers_drop_the_death_and_keep_the_routing() -> None:
    row = SimpleNamespace(
        id=7,
        routing_key="order.paid",
        original_exchange="p.ticketing.events",
        replay_count=1,
        headers={
            "x-reason": "r",
            "x-stack": "s",
            "x-attempt": 3,
            "x-attempts": 4,
            "x-death": [],
            "x-correlation-id": "c",
            "x-type": "OrderPaid",
        },
    )
    headers = dlq.replay_headers(row, audit_id=9, actor="alice")
    assert headers["x-original-routing-key"] == "order.paid" and headers["x-replay-count"] == 2
    assert headers["x-replay-id"] == 9 and headers["x-replayed-from"] == 7 and headers["x-replayed-by"] == "alice"
    assert not {"x-reason", "x-stack", "x-attempt", "x-attempts", "x-death"} & set(headers)
    assert headers["x-correlation-id"] == "c"  # the log trail continues


def test_header_values_become_json() -> None:
    value = dlq.jsonable({"a": b"text", "b": b"\xff\xfe", "c": [datetime(2030, 1, 1, tzinfo=UTC)]})
    assert value == {"a": "text", "b": {"base64": "//4="}, "c": ["2030-01-01T00:00:00+00:00"]}
