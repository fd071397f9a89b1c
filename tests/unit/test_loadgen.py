"""The lean load client (ticketing/loadgen.py) that the demo and the benchmarks measure the gateway with: it must
read each answer whole, keep its connections alive, survive a server that closes them, and report its ceiling."""

from __future__ import annotations

import asyncio

import pytest

from ticketing.loadgen import HttpError, HttpPool, client_ceiling


async def _server(answers: list[bytes]) -> tuple[asyncio.Server, list[int]]:
    """A server that answers each request on a connection with the next of ``answers``; counts connections."""
    connections: list[int] = []

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        connections.append(1)
        try:
            while True:
                head = await reader.readuntil(b"\r\n\r\n")
                length = next(
                    (
                        int(line.split(b":")[1])
                        for line in head.split(b"\r\n")
                        if line.lower().startswith(b"content-length")
                    ),
                    0,
                )
                await reader.readexactly(length)
                answer = answers.pop(0)
                writer.write(answer)
                await writer.drain()
                if b"Connection: close" in answer:
                    break
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        writer.close()

    return await asyncio.start_server(handle, "127.0.0.1", 0), connections


async def test_reads_each_answer_whole_on_one_kept_alive_connection() -> None:
    created = b'HTTP/1.1 201 Created\r\ncontent-length: 13\r\ncontent-type: application/json\r\n\r\n{"id":"abc"} '
    refused = b"HTTP/1.1 409 Conflict\r\nContent-Length: 2\r\n\r\n{}"
    server, connections = await _server([created, refused, refused])
    port = server.sockets[0].getsockname()[1]
    async with server, HttpPool(f"http://127.0.0.1:{port}", 1) as pool:
        first = await pool.post("/checkout", json={"items": []}, headers={"Authorization": "Bearer t"})
        second = await pool.post("/checkout", json={"items": []})
        third = await pool.get("/orders")
    assert (first.status, first.json()) == (201, {"id": "abc"})
    assert [second.status, third.status] == [409, 409]
    assert len(connections) == 1


async def test_opens_a_new_connection_after_the_server_closes_one() -> None:
    closing = b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
    server, connections = await _server([closing, closing])
    port = server.sockets[0].getsockname()[1]
    async with server, HttpPool(f"http://127.0.0.1:{port}", 1) as pool:
        assert [(await pool.get("/a")).status, (await pool.get("/b")).status] == [200, 200]
    assert len(connections) == 2


async def test_a_refused_connection_is_an_http_error() -> None:
    server, _ = await _server([])
    port = server.sockets[0].getsockname()[1]
    server.close()
    await server.wait_closed()
    async with HttpPool(f"http://127.0.0.1:{port}", 1) as pool:
        with pytest.raises(HttpError):
            await pool.get("/")


async def test_its_own_ceiling_is_measured_against_a_null_server() -> None:
    assert await client_ceiling(8, seconds=0.3) > 1000  # requests/s; tens of thousands on an idle machine
