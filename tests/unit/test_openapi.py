"""The OpenAPI document says what the API really answers (pure: the app is built, nothing is served)."""

from __future__ import annotations

import json
from typing import Any

from services.gateway.app import create_app
from shared.settings import Settings


def document() -> dict[str, Any]:
    return create_app(Settings(environment="test")).openapi()  # type: ignore[call-arg]


def test_every_error_is_documented_as_problem_json_and_fastapis_own_body_is_gone() -> None:
    doc = document()
    errors = [
        (path, method, code, response)
        for path, ops in doc["paths"].items()
        for method, op in ops.items()
        for code, response in op["responses"].items()
        if code[0] in "45"
    ]
    assert errors
    for path, method, code, response in errors:
        assert list(response["content"]) == ["application/problem+json"], (path, method, code)
    assert "HTTPValidationError" not in json.dumps(doc)
    assert set(doc["components"]["schemas"]["Problem"]["required"]) == {"type", "title", "status", "detail"}


def test_401_where_a_token_is_needed_and_metrics_is_text() -> None:
    paths = document()["paths"]
    assert "401" in paths["/checkout"]["post"]["responses"]
    assert "401" in paths["/orders/{order_id}"]["get"]["responses"]
    assert all(
        "401" in op["responses"] for path, ops in paths.items() if path.startswith("/admin") for op in ops.values()
    )
    assert "401" not in paths["/search"]["get"]["responses"]  # anonymous
    assert list(paths["/metrics"]["get"]["responses"]["200"]["content"]) == ["text/plain"]


def test_the_buyer_and_door_routes_document_their_problems() -> None:
    paths = document()["paths"]
    assert {"422", "429", "401"} <= set(paths["/orders"]["get"]["responses"])
    assert {"404", "409", "401"} <= set(paths["/orders/{order_id}/tickets"]["get"]["responses"])
    assert {"202", "404", "409", "429", "401"} <= set(paths["/orders/{order_id}/resend-email"]["post"]["responses"])
    checkin = paths["/admin/events/{event_id}/checkin"]["post"]["responses"]
    assert {"200", "401", "403", "404", "409", "422"} <= set(checkin)
    assert {"200", "401", "403", "404"} <= set(paths["/admin/events/{event_id}/checkins"]["get"]["responses"])
