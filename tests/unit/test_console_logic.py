"""Pure pieces of the console and the job runner: selections from a form, the CSRF token, chunk sizes."""

from __future__ import annotations

from types import SimpleNamespace
from typing import Any

import pytest
from pydantic import SecretStr

from services.gateway.console.dlq_pages import _rate, _selection
from services.gateway.console.session import csrf_token
from services.gateway.problems import Problem
from services.ops.jobs import chunk_size


def test_a_panel_selects_exactly_one_of_ids_a_group_or_all() -> None:
    assert _selection({"ids": "3, 5", "group": "", "all": ""}) == ([3, 5], None, False)
    assert _selection({"ids": "", "group": "abc123", "all": ""}) == ([], "abc123", False)
    assert _selection({"ids": "", "group": "", "all": "1"}) == ([], None, True)
    for bad in ({"ids": "", "group": "", "all": ""}, {"ids": "1", "all": "1"}, {"ids": "x"}, {"ids": "0"}):
        with pytest.raises(Problem) as refused:
            _selection(bad)
        assert refused.value.status == 422


def test_a_rate_is_optional_and_bounded() -> None:
    assert _rate({}) is None and _rate({"rate": " "}) is None and _rate({"rate": "25"}) == 25.0
    for bad in ("0", "-1", "10001", "fast"):
        with pytest.raises(Problem):
            _rate({"rate": bad})


def _request(secret: str) -> Any:
    settings = SimpleNamespace(jwt_secret=SecretStr(secret))
    return SimpleNamespace(app=SimpleNamespace(state=SimpleNamespace(settings=settings)))


def test_the_csrf_token_is_bound_to_the_session_and_the_secret() -> None:
    token = csrf_token(_request("s1"), "session-a")
    assert token == csrf_token(_request("s1"), "session-a") and len(token) == 64
    assert token != csrf_token(_request("s1"), "session-b")
    assert token != csrf_token(_request("s2"), "session-a")


def test_a_chunk_is_at_most_100_letters_and_a_third_of_the_lease() -> None:
    assert chunk_size(200, 30) == 100
    assert chunk_size(10, 30) == 100
    assert chunk_size(1, 30) == 10
    assert chunk_size(0.01, 30) == 1
