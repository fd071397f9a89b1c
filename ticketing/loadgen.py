"""The demo's and the benchmarks' load client, and what it can itself do.

A figure is only the server's when the client reaches several times more (docs/benchmarks.md). aiohttp's
client spent about 0.4 ms of CPU per request here and tops out near 1,850 requests/s, so once the gateway
answered a sold-out rush at about that rate the figure was the client's. ``HttpPool`` is a lean HTTP/1.1
client: keep-alive connections on asyncio streams, one request at a time on each, requests encoded by hand and
responses read by their Content-Length. It speaks only what the gateway answers (no chunked bodies, no TLS,
no redirects), which is all a load generator needs.

``client_ceiling`` measures the client's own ceiling: requests/s at the same concurrency against a null HTTP
server (``python -m ticketing.loadgen --null-server``) in a process of its own, which answers every request
with a fixed response and so costs next to nothing; printed beside every figure.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import socket
import subprocess
import sys
import time
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from types import TracebackType
from typing import Any, cast
from urllib.parse import urlsplit

MAX_HEAD = 64 * 1024


@dataclass(frozen=True)
class Reply:
    status: int
    body: bytes

    def json(self) -> Any:
        return json.loads(self.body)


class HttpError(Exception):
    """The connection failed or the response was not HTTP/1.1 as the gateway sends it."""


class _Connection:
    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader, self.writer = reader, writer

    async def exchange(self, request: bytes) -> tuple[Reply, bool]:
        """Send one request, read its response; also whether the connection can be used again."""
        self.writer.write(request)
        head = await self.reader.readuntil(b"\r\n\r\n")
        status_line, _, header_block = head.partition(b"\r\n")
        parts = status_line.split(b" ", 2)
        if len(parts) < 2 or not parts[0].startswith(b"HTTP/1."):
            raise HttpError(f"not an HTTP/1.1 response: {status_line[:80]!r}")
        length, keep = 0, True
        for line in header_block.split(b"\r\n"):
            name, _, value = line.partition(b":")
            name = name.strip().lower()
            if name == b"content-length":
                length = int(value)
            elif name == b"connection" and value.strip().lower() == b"close":
                keep = False
            elif name == b"transfer-encoding":
                raise HttpError("chunked responses are not supported by this load client")
        body = await self.reader.readexactly(length) if length else b""
        return Reply(int(parts[1]), body), keep

    def close(self) -> None:
        self.writer.close()


class HttpPool:
    """Up to ``size`` keep-alive connections to one ``http://host:port``; ``request`` waits for a free one."""

    def __init__(self, base_url: str, size: int, timeout: float = 120.0, headers: Mapping[str, str] | None = None):
        url = urlsplit(base_url)
        if url.scheme != "http" or url.hostname is None:
            raise ValueError(f"an http:// base URL is needed, not {base_url!r}")
        self.host, self.port = url.hostname, url.port or 80
        self.timeout = timeout
        self._host_header = f"Host: {url.netloc}\r\n"
        self._default_headers = "".join(f"{k}: {v}\r\n" for k, v in (headers or {}).items())
        self._idle: list[_Connection] = []
        self._slots = asyncio.Semaphore(size)

    async def __aenter__(self) -> HttpPool:
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.close()

    async def close(self) -> None:
        idle, self._idle = self._idle, []
        for conn in idle:
            conn.close()

    def encode(
        self, method: str, path: str, *, json_body: Any = None, headers: Mapping[str, str] | None = None
    ) -> bytes:
        """The request's bytes (encode once, send many times: ``send``)."""
        body = b"" if json_body is None else json.dumps(json_body, separators=(",", ":")).encode()
        extra = "".join(f"{k}: {v}\r\n" for k, v in (headers or {}).items())
        content = f"Content-Type: application/json\r\nContent-Length: {len(body)}\r\n" if json_body is not None else ""
        head = f"{method} {path} HTTP/1.1\r\n{self._host_header}{self._default_headers}{extra}{content}\r\n"
        return head.encode("latin-1") + body

    async def request(
        self, method: str, path: str, *, json: Any = None, headers: Mapping[str, str] | None = None
    ) -> Reply:
        return await self.send(self.encode(method, path, json_body=json, headers=headers))

    async def get(self, path: str, headers: Mapping[str, str] | None = None) -> Reply:
        return await self.request("GET", path, headers=headers)

    async def post(self, path: str, *, json: Any = None, headers: Mapping[str, str] | None = None) -> Reply:
        return await self.request("POST", path, json=json, headers=headers)

    async def send(self, request: bytes) -> Reply:
        """Send encoded request bytes on a free connection (opened when none is idle); raises HttpError."""
        async with self._slots:
            conn = self._idle.pop() if self._idle else None
            try:
                async with asyncio.timeout(self.timeout):
                    if conn is None:
                        reader, writer = await asyncio.open_connection(self.host, self.port, limit=MAX_HEAD)
                        sock = writer.get_extra_info("socket")
                        if sock is not None:
                            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
                        conn = _Connection(reader, writer)
                    reply, keep = await conn.exchange(request)
            except (OSError, EOFError, asyncio.IncompleteReadError, asyncio.LimitOverrunError, ValueError) as exc:
                if conn is not None:
                    conn.close()
                raise HttpError(f"{type(exc).__name__}: {exc}") from exc
            except BaseException:  # a timeout or a cancellation mid-exchange: the connection is in an unknown state
                if conn is not None:
                    conn.close()
                raise
            if keep:
                self._idle.append(conn)
            else:
                conn.close()
            return reply


@contextlib.contextmanager
def null_server() -> Iterator[str]:
    """A null HTTP server in a child process (its base URL): the client's own ceiling is measured against it."""
    proc = subprocess.Popen(
        [sys.executable, "-m", "ticketing.loadgen", "--null-server"], stdout=subprocess.PIPE, text=True
    )
    try:
        assert proc.stdout is not None
        port = int(proc.stdout.readline())
        yield f"http://127.0.0.1:{port}"
    finally:
        proc.terminate()
        proc.wait(timeout=10)


async def client_ceiling(concurrency: int, seconds: float = 1.5) -> float:
    """Requests/s this client reaches at ``concurrency`` against the null server (its own ceiling)."""
    with null_server() as base_url:
        async with HttpPool(base_url, concurrency) as pool:
            request = pool.encode("GET", "/healthz")
            await asyncio.gather(*(pool.send(request) for _ in range(concurrency)))  # connections open first
            done = 0
            deadline = time.perf_counter() + seconds

            async def worker() -> None:
                nonlocal done
                while time.perf_counter() < deadline:
                    await pool.send(request)
                    done += 1

            started = time.perf_counter()
            await asyncio.gather(*(worker() for _ in range(concurrency)))
            return done / (time.perf_counter() - started)


class _NullProtocol(asyncio.Protocol):
    RESPONSE = b'HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: 15\r\n\r\n{"status":"ok"}'

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport, self.buffer = cast(asyncio.Transport, transport), b""  # uvloop's is not a subclass

    def data_received(self, data: bytes) -> None:
        self.buffer += data
        answered = self.buffer.count(b"\r\n\r\n")  # GET requests only: no bodies
        if answered:
            self.buffer = self.buffer[self.buffer.rindex(b"\r\n\r\n") + 4 :]
            self.transport.write(self.RESPONSE * answered)


async def _serve_null() -> None:
    server = await asyncio.get_running_loop().create_server(_NullProtocol, "127.0.0.1", 0)
    print(server.sockets[0].getsockname()[1], flush=True)
    async with server:
        await server.serve_forever()


def run(main: Any) -> Any:
    """``asyncio.run`` on uvloop where it is installed (the load client's own CPU per request halves)."""
    try:
        import uvloop
    except ImportError:  # pragma: no cover - uvloop comes with uvicorn[standard] on Linux and macOS
        return asyncio.run(main)
    return uvloop.run(main)


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--null-server", action="store_true", help="serve a fixed response; print the port")
    if parser.parse_args().null_server:
        with contextlib.suppress(KeyboardInterrupt):
            run(_serve_null())
