"""The AsyncAPI document of the message contracts names every message type with a real payload schema."""

from __future__ import annotations

import inspect

from shared import contracts, envelopes, messages


def test_every_message_type_is_documented_with_a_non_empty_payload_schema() -> None:
    doc = contracts.document()
    schemas, channels = doc["components"]["schemas"], doc["channels"]
    sent = set(envelopes.ROUTING_KEYS.values())
    assert sent <= set(channels)  # every routing key is a channel
    documented = {t for t in (*envelopes.ROUTING_KEYS, *contracts.REPLIES.values())}
    for model in documented:
        schema = schemas[model.__name__]
        assert schema.get("properties"), model.__name__  # a payload, not `null`
        assert set(schema.get("required", [])) <= set(schema["properties"])
    # Every message of shared/messages.py is in the document, but the parts of one (lines, views) and the bases
    # of the kinds that are routed: a new message type without a routing key or a reply fails here.
    parts = {
        messages.Message,
        messages.OrderLine,
        messages.PricedLine,
        messages.OrderView,
        messages.IssuedTicket,
        messages.NewTicketType,
        messages.TicketTypeInfo,
        messages.OrderReleased,
        messages.RefundNotice,
        messages.EventInfo,
        messages.CancellationProgress,
        messages.BatchedCheckout,  # the items of CheckoutBatch
        messages.CheckoutItemDecided,  # and of its answer, CheckoutsDecided
    }
    declared = {
        m
        for _, m in inspect.getmembers(messages, inspect.isclass)
        if issubclass(m, messages.Message) and m.__module__ == messages.__name__
    }
    assert declared - parts == documented
    assert schemas["OrderPaid"]["properties"]["tickets"]["type"] == "array"
    assert "order_ids" in schemas["HoldExpiryDue"]["properties"]
