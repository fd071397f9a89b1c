"""Issue 8 at the HTTP edge, through the running gateway: authentication before the body, body caps, bounds on
every input and claim, JWT dates and lifetime, what /readyz and /metrics tell whom, admin Idempotency-Key."""

from __future__ import annotations

import asyncio
import json
import time
import uuid
from typing import Any

import httpx
import jwt

from tests.harness import Stack

PROBLEM = "application/problem+json"
MiB = 1024 * 1024


async def raw_exchange(
    stack: Stack, head: str, chunks: list[bytes], timeout: float = 15.0
) -> tuple[int, dict[str, str], bytes]:
    """Send the request head and the given body chunks, never the rest of the body, then read the answer.

    An answer that arrives proves the server decided without the body it never got."""
    reader, writer = await asyncio.open_connection("127.0.0.1", stack.settings.gateway_port)
    try:
        writer.write(head.encode("latin-1"))
        for chunk in chunks:
            writer.write(chunk)
        await writer.drain()
        raw = await asyncio.wait_for(_read_response(reader), timeout)
    finally:
        writer.close()
    status_line, _, rest = raw.partition(b"\r\n")
    header_block, _, body = rest.partition(b"\r\n\r\n")
    headers = {}
    for line in header_block.split(b"\r\n"):
        name, _, value = line.decode("latin-1").partition(":")
        headers[name.strip().lower()] = value.strip()
    return int(status_line.split()[1]), headers, body


async def _read_response(reader: asyncio.StreamReader) -> bytes:
    data = await reader.readuntil(b"\r\n\r\n")
    length = 0
    for line in data.split(b"\r\n"):
        if line.lower().startswith(b"content-length:"):
            length = int(line.split(b":", 1)[1])
    return data + await reader.readexactly(length)


def head(path: str, token: str | None, extra: str) -> str:
    auth = f"Authorization: Bearer {token}\r\n" if token else ""
    return f"POST {path} HTTP/1.1\r\nHost: gateway\r\nContent-Type: application/json\r\n{auth}{extra}\r\n"


def forged(stack: Stack, **claims: Any) -> str:
    now = int(time.time())
    base = {
        "sub": "mallory",
        "email": "m@example.com",
        "roles": [],
        "iat": now,
        "exp": now + 600,
        "iss": stack.settings.jwt_issuer,
    }
    base.update(claims)
    return jwt.encode(
        {k: v for k, v in base.items() if v is not None},
        stack.settings.jwt_secret.get_secret_value(),
        algorithm="HS256",
    )


def checkout_body(ticket_type_id: str) -> dict[str, Any]:
    return {"items": [{"ticket_type_id": ticket_type_id, "quantity": 1}]}


# --- 3: authentication before the body; body caps ---------------------------------------------------


async def test_an_unauthenticated_20_mb_checkout_is_refused_before_its_body_is_read(stack: Stack) -> None:
    status, headers, body = await raw_exchange(
        stack, head("/checkout", None, f"Content-Length: {20 * MiB}\r\n"), [b"{" + b" " * 65_535]
    )
    assert status == 401
    assert headers["content-type"] == PROBLEM and json.loads(body)["type"].endswith("/unauthorized")
    status, headers, _ = await raw_exchange(
        stack, head("/checkout", "not-a-jwt", f"Content-Length: {20 * MiB}\r\n"), [b"[" * 65_536]
    )
    assert status == 401


async def test_a_malformed_body_without_a_valid_token_gets_401_not_422(stack: Stack) -> None:
    async with httpx.AsyncClient(base_url=stack.base_url, timeout=30) as c:
        for headers in ({}, {"Authorization": "Bearer x.y.z"}, {"Authorization": f"Bearer {forged(stack, exp=1)}"}):
            r = await c.post("/checkout", content=b"{not json", headers={"Content-Type": "application/json", **headers})
            assert r.status_code == 401, r.text
            assert r.headers["content-type"] == PROBLEM
        # A buyer (not an admin) is refused on an admin route before the body is looked at either.
        r = await c.post(
            "/admin/events",
            content=b"{not json",
            headers={"Content-Type": "application/json", "Authorization": f"Bearer {stack.token('buyer')}"},
        )
        assert r.status_code == 403 and r.headers["content-type"] == PROBLEM


async def test_bodies_above_the_cap_get_413_with_content_length_or_chunked(stack: Stack) -> None:
    token = stack.token("big-body-buyer")
    cap = stack.settings.max_body_bytes
    status, headers, body = await raw_exchange(
        stack, head("/checkout", token, f"Content-Length: {cap + 1}\r\n"), [b"{"]
    )
    assert status == 413 and headers["content-type"] == PROBLEM
    assert json.loads(body)["type"].endswith("/body-too-large")
    # Chunked, no length declared: refused once the running total passes the cap; the end never comes.
    chunk = b" " * 16_384
    chunks = [f"{len(chunk):x}\r\n".encode() + chunk + b"\r\n" for _ in range(cap // len(chunk) + 2)]
    status, headers, body = await raw_exchange(
        stack, head("/checkout", token, "Transfer-Encoding: chunked\r\n"), chunks
    )
    assert status == 413 and headers["content-type"] == PROBLEM


async def test_the_largest_legal_admin_event_fits_its_larger_cap(stack: Stack) -> None:
    body = {
        "title": "Lớn",
        "venue": "Nhà hát",
        "city": "Huế",
        "starts_at": "2031-01-01T20:00:00+07:00",
        "description": "ễ" * 10_000,
        "ticket_types": [{"name": f"{i:03d}" + "ễ" * 197, "price": 1, "capacity": 1} for i in range(100)],
    }
    raw = json.dumps(body).encode()  # \\u escapes: about 150 KB, more than the public cap
    assert len(raw) > stack.settings.max_body_bytes
    async with stack.client("organiser", admin=True) as c:
        r = await c.post("/admin/events", content=raw, headers={"Content-Type": "application/json"})
    assert r.status_code == 201, r.text
    assert len(r.json()["ticket_types"]) == 100


# --- 4: no 500 from hostile input ------------------------------------------------------------------


async def test_hostile_claims_and_parameters_get_4xx_problems(stack: Stack) -> None:
    event = await stack.create_event(capacity=5)
    tt = event["ticket_types"][0]["ticket_type_id"]
    async with httpx.AsyncClient(base_url=stack.base_url, timeout=30) as c:
        for token in (
            forged(stack, sub="x" * 5_000),
            forged(stack, sub=""),
            forged(stack, sub=["a"]),
            forged(stack, email="e" * 1_000),
            forged(stack, roles=["r"] * 1_000),
            forged(stack, locale={"a": 1}),
            forged(stack, sub="a\x00b"),
        ):
            r = await c.post("/checkout", json=checkout_body(tt), headers={"Authorization": f"Bearer {token}"})
            assert r.status_code == 401, r.text
            assert r.headers["content-type"] == PROBLEM
        for params in (
            {"min_price": 2**70},
            {"max_price": 2**70},
            {"min_price": -1},
            {"from": "0001-01-01T00:00:00+01:00"},
            {"to": "9999-12-31T23:59:59-01:00"},
            {"q": "x" * 101},
            {"q": " ".join(["chu"] * 9)},
            {"q": "a" * 33},
            {"city": "Hà\x00Nội"},
            {"page": 2**70},
        ):
            r = await c.get("/search", params=params)
            assert r.status_code == 422, (params, r.text)
            assert r.headers["content-type"] == PROBLEM
        admin = {"Authorization": f"Bearer {stack.token('organiser', admin=True)}"}
        r = await c.get(f"/admin/dlq/messages/{2**70}", headers=admin)
        assert r.status_code == 422 and r.headers["content-type"] == PROBLEM
        r = await c.post("/admin/dlq/inventory/replay", json={"ids": [2**70], "dry_run": True}, headers=admin)
        assert r.status_code == 422 and r.headers["content-type"] == PROBLEM
        r = await c.post(
            "/admin/events",
            headers=admin,
            json={
                "title": "Evil\r\nBcc: all@example.com",
                "venue": "v",
                "city": "c",
                "starts_at": "2031-01-01T20:00:00+07:00",
            },
        )
        assert r.status_code == 422 and r.headers["content-type"] == PROBLEM


# --- 7: JWT dates and lifetime; /readyz, /metrics; admin Idempotency-Key ----------------------------


async def test_jwt_dates_must_be_numbers_and_the_lifetime_is_bounded(stack: Stack) -> None:
    now = int(time.time())
    async with httpx.AsyncClient(base_url=stack.base_url, timeout=30) as c:
        order = f"/orders/{uuid.uuid4()}"
        ok = await c.get(order, headers={"Authorization": f"Bearer {forged(stack)}"})
        assert ok.status_code == 404  # authenticated: the order just does not exist
        too_long = stack.settings.jwt_max_lifetime_seconds + 60
        for token in (
            forged(stack, exp=str(now + 600)),
            forged(stack, iat=str(now)),
            forged(stack, nbf=str(now - 10)),
            forged(stack, exp=True),
            forged(stack, exp=now + too_long),
            forged(stack, iat=None, exp=now + too_long),
        ):
            r = await c.get(order, headers={"Authorization": f"Bearer {token}"})
            assert r.status_code == 401, r.text
            assert r.headers["content-type"] == PROBLEM


async def test_readyz_is_bare_for_anonymous_callers_and_metrics_are_for_admins(stack: Stack) -> None:
    async with httpx.AsyncClient(base_url=stack.base_url, timeout=30) as c:
        anonymous = await c.get("/readyz")
        assert anonymous.status_code == 200 and anonymous.json() == {"status": "ready"}
        admin = {"Authorization": f"Bearer {stack.token('operator', admin=True)}"}
        detailed = await c.get("/readyz", headers=admin)
        assert detailed.json() == {"status": "ready", "checks": ["database", "rabbitmq", "redis"]}
        assert (await c.get("/metrics")).status_code == 401
        buyer = {"Authorization": f"Bearer {stack.token('buyer')}"}
        assert (await c.get("/metrics", headers=buyer)).status_code == 403
        metrics = await c.get("/metrics", headers=admin)
        assert metrics.status_code == 200 and "ticketing_search_seconds" in metrics.text


async def test_admin_event_idempotency_key_with_a_different_body_gets_422(stack: Stack) -> None:
    body = {
        "title": "Idempotent",
        "venue": "Nhà hát",
        "city": "Huế",
        "starts_at": "2031-02-01T20:00:00+07:00",
        "ticket_types": [{"name": "Thường", "price": 100_000, "capacity": 10}],
    }
    key = {"Idempotency-Key": uuid.uuid4().hex}
    async with stack.client("organiser", admin=True) as c:
        first = await c.post("/admin/events", json=body, headers=key)
        assert first.status_code == 201, first.text
        again = await c.post("/admin/events", json=body, headers=key)
        assert again.status_code == 200, again.text
        assert again.json()["event_id"] == first.json()["event_id"]
        assert again.json()["ticket_types"] == first.json()["ticket_types"]
        for changed in (
            {**body, "title": "Something else"},
            {**body, "ticket_types": [{"name": "Thường", "price": 1, "capacity": 10}]},
            {**body, "ticket_types": []},
        ):
            r = await c.post("/admin/events", json=changed, headers=key)
            assert r.status_code == 422, r.text
            assert r.json()["type"].endswith("/idempotency-key-reuse")
        detail = await c.get(f"/events/{first.json()['event_id']}")
        assert detail.json()["title"] == "Idempotent"
