"""A RabbitMQ node of our own, and the checks that tell a sick broker from a healthy one.

Used by the test harness, `.ci/run` (``python -m ticketing.broker_node``), the soak and `ticketing doctor`.

Why a node of our own: ``rabbitmq-server`` as packaged switches user with ``su`` and so runs with the soft
limit of 1,024 open files; RabbitMQ 3.10 then stops answering AMQP for ever once about 300 quorum queues exist
(docs/decisions.md, section 6). So a node we start runs the inner ``/usr/lib/rabbitmq/bin/rabbitmq-server``
with ``ulimit -n`` raised to the hard limit, and we read back the limit the Erlang VM really got from
``/proc/<pid>/limits``.
Its name, ports, data, logs, config and Erlang cookie all live under one directory outside root's home, so it
can run next to the machine's broker and be removed without a trace.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit

import aio_pika

from shared import logs
from ticketing.ports import free_port

RABBITMQ_SERVER = "/usr/lib/rabbitmq/bin/rabbitmq-server"
# The inner script: the packaged wrapper switches to the rabbitmq user and its home, hence its cookie.
RABBITMQCTL = "/usr/lib/rabbitmq/bin/rabbitmqctl"
# RabbitMQ's production guidance is at least 65,536; below this we say so (the node still starts).
RECOMMENDED_FD_LIMIT = 65_536
log = logs.get_logger(__name__)
# Below this the node is at the mercy of a few hundred quorum queues: refuse to run a suite on it.
MINIMUM_FD_LIMIT = 4_096


async def amqp_handshake(url: str, timeout: float = 5.0) -> str | None:
    """None if the broker at ``url`` completes an AMQP handshake within ``timeout`` s, else why not.

    A TCP connect is not enough: a wedged node accepts TCP and never sends ``Connection.Start``."""
    conn = None
    try:
        # aio_pika's own timeout covers the TCP connect only in some versions: bound the whole handshake.
        conn = await asyncio.wait_for(aio_pika.connect(url, timeout=timeout), timeout=timeout)
        return None
    except TimeoutError:
        return f"no AMQP handshake within {timeout:g} s"
    except Exception as exc:
        return f"{type(exc).__name__}: {exc}"[:300]
    finally:
        if conn is not None:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(conn.close(), timeout=timeout)


def handshake_ok(url: str, timeout: float = 5.0) -> str | None:
    """``amqp_handshake`` for synchronous callers (a fresh event loop)."""
    return asyncio.run(amqp_handshake(url, timeout))


def fd_limits(pid: int) -> tuple[int, int] | None:
    """(soft, hard) open-file limit of a running process, from /proc; None if it cannot be read."""
    try:
        for line in Path(f"/proc/{pid}/limits").read_text().splitlines():
            if line.startswith("Max open files"):
                soft, hard = line.split()[3:5]
                return (int(soft) if soft.isdigit() else sys.maxsize, int(hard) if hard.isdigit() else sys.maxsize)
    except OSError:
        return None
    return None


def open_fds(pid: int) -> int | None:
    try:
        return len(os.listdir(f"/proc/{pid}/fd"))
    except OSError:
        return None


def beam_pids() -> list[int]:
    """Every Erlang VM on this machine (RabbitMQ nodes are ``beam.smp``)."""
    pids: list[int] = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            if (entry / "comm").read_text().strip().startswith("beam"):
                pids.append(int(entry.name))
        except OSError:
            continue
    return pids


def beam_pid_listening_on(port: int) -> int | None:
    """The Erlang VM that owns the listening socket on ``port`` (found through /proc, no tools needed)."""
    inodes: set[str] = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        try:
            lines = Path(table).read_text().splitlines()[1:]
        except OSError:
            continue
        for line in lines:
            parts = line.split()
            local, state, inode = parts[1], parts[3], parts[9]
            if state == "0A" and int(local.rsplit(":", 1)[1], 16) == port:  # 0A = LISTEN
                inodes.add(inode)
    if not inodes:
        return None
    for pid in beam_pids():
        try:
            for fd in os.listdir(f"/proc/{pid}/fd"):
                with contextlib.suppress(OSError):
                    target = os.readlink(f"/proc/{pid}/fd/{fd}")
                    if target.startswith("socket:[") and target[8:-1] in inodes:
                        return pid
        except OSError:
            continue
    return None


def epmd_names(timeout: float = 2.0) -> dict[str, int]:
    """Erlang nodes registered with the local epmd: short name -> distribution port (NAMES_REQ, no tools)."""
    try:
        with socket.create_connection(("127.0.0.1", 4369), timeout=timeout) as s:
            s.sendall(b"\x00\x01n")
            data = b""
            while chunk := s.recv(4096):
                data += chunk
    except OSError:
        return {}
    names: dict[str, int] = {}
    for line in data[4:].decode(errors="replace").splitlines():
        parts = line.split()  # "name rabbit at port 25672"
        if len(parts) == 5 and parts[0] == "name":
            names[parts[1]] = int(parts[4])
    return names


def _listening_ports(pid: int) -> set[int]:
    inodes: set[str] = set()
    try:
        for fd in os.listdir(f"/proc/{pid}/fd"):
            with contextlib.suppress(OSError):
                target = os.readlink(f"/proc/{pid}/fd/{fd}")
                if target.startswith("socket:["):
                    inodes.add(target[8:-1])
    except OSError:
        return set()
    ports: set[int] = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        with contextlib.suppress(OSError):
            for line in Path(table).read_text().splitlines()[1:]:
                parts = line.split()
                if parts[3] == "0A" and parts[9] in inodes:
                    ports.add(int(parts[1].rsplit(":", 1)[1], 16))
    return ports


@dataclass(frozen=True)
class LocalNode:
    """A RabbitMQ node running on this machine, found from its AMQP port: what rabbitmqctl needs to reach it."""

    pid: int
    name: str  # e.g. rabbit@localhost
    home: str  # where its Erlang cookie is

    @classmethod
    def find(cls, amqp_port: int) -> LocalNode | None:
        pid = beam_pid_listening_on(amqp_port)
        if pid is None:
            return None
        ports = _listening_ports(pid)
        short = next((n for n, p in epmd_names().items() if p in ports), None)
        if short is None:
            return None
        home = "/var/lib/rabbitmq"
        with contextlib.suppress(OSError):
            for item in Path(f"/proc/{pid}/environ").read_bytes().split(b"\0"):
                if item.startswith(b"HOME="):
                    home = item[5:].decode()
        return cls(pid=pid, name=f"{short}@localhost", home=home)

    def ctl(self, *args: str, timeout: float = 10.0) -> subprocess.CompletedProcess[str]:
        """rabbitmqctl against this node, never longer than ``timeout`` (a wedged node hangs it for ever).

        HOME points at the node's own home so the CLI reads the node's cookie (it is never on a command line)."""
        env = {**os.environ, "HOME": self.home}
        return subprocess.run(
            [RABBITMQCTL, "-n", self.name, *args], env=env, capture_output=True, text=True, timeout=timeout, check=False
        )

    def queues(self, timeout: float = 10.0) -> list[tuple[str, int, str]] | None:
        """(name, consumers, type) of every queue in the default vhost; None if the node does not answer."""
        try:
            r = self.ctl("list_queues", "-q", "--no-table-headers", "name", "consumers", "type", timeout=timeout)
        except (subprocess.TimeoutExpired, OSError):
            return None
        if r.returncode != 0:
            return None
        out: list[tuple[str, int, str]] = []
        for line in r.stdout.splitlines():
            parts = line.split("\t")
            if len(parts) == 3 and parts[1].isdigit():
                out.append((parts[0], int(parts[1]), parts[2]))
        return out

    def exchanges(self, timeout: float = 10.0) -> list[str] | None:
        try:
            r = self.ctl("list_exchanges", "-q", "--no-table-headers", "name", timeout=timeout)
        except (subprocess.TimeoutExpired, OSError):
            return None
        return [line.strip() for line in r.stdout.splitlines() if line.strip()] if r.returncode == 0 else None


def stale_prefixes(queues: list[tuple[str, int, str]], starts_with: str) -> set[str]:
    """Prefixes (``test-<run>.``) none of whose queues has a consumer: the run that declared them is gone.

    A live run always has consumers on its work queues; its retry and delay queues never have any, so a
    queue's own consumer count is not enough to tell a leftover from a live run's queue."""
    by_prefix: dict[str, int] = {}
    for name, consumers, _ in queues:
        if not name.startswith(starts_with) or "." not in name:
            continue
        prefix = name.split(".", 1)[0] + "."
        by_prefix[prefix] = by_prefix.get(prefix, 0) + consumers
    return {p for p, consumers in by_prefix.items() if consumers == 0}


@dataclass
class BrokerNode:
    """A RabbitMQ node on its own ports with everything under ``base`` (removed on stop)."""

    name: str
    port: int
    dist_port: int
    base: Path
    keep_data: bool = False

    @classmethod
    def create(cls, label: str = "ticketing", port: int = 0, base: str | os.PathLike[str] | None = None) -> BrokerNode:
        port = port or free_port()
        root = Path(base) if base else Path(tempfile.mkdtemp(prefix=f"rabbitmq-{label}-{port}-"))
        return cls(name=f"{label}-{port}@localhost", port=port, dist_port=free_port(), base=root)

    @property
    def url(self) -> str:
        return f"amqp://guest:guest@127.0.0.1:{self.port}/"

    @property
    def pid_file(self) -> Path:
        return self.base / "rabbit.pid"

    def env(self) -> dict[str, str]:
        """Environment for rabbitmq-server and rabbitmqctl: nothing from /etc/rabbitmq, nothing in root's home."""
        return {
            **os.environ,
            "HOME": str(self.base),  # the Erlang cookie (~/.erlang.cookie) both the node and rabbitmqctl read
            "RABBITMQ_NODENAME": self.name,
            "RABBITMQ_NODE_IP_ADDRESS": "127.0.0.1",
            "RABBITMQ_NODE_PORT": str(self.port),
            "RABBITMQ_DIST_PORT": str(self.dist_port),
            "RABBITMQ_MNESIA_BASE": str(self.base / "mnesia"),
            "RABBITMQ_LOG_BASE": str(self.base / "log"),
            "RABBITMQ_PID_FILE": str(self.pid_file),
            "RABBITMQ_CONF_ENV_FILE": str(self.base / "rabbitmq-env.conf"),
            "RABBITMQ_CONFIG_FILE": str(self.base / "rabbitmq.conf"),
            "RABBITMQ_ENABLED_PLUGINS_FILE": str(self.base / "enabled_plugins"),
            "ERL_EPMD_ADDRESS": "127.0.0.1",
        }

    def _write_files(self) -> None:
        for sub in ("mnesia", "log"):
            (self.base / sub).mkdir(parents=True, exist_ok=True)
        (self.base / "rabbitmq-env.conf").write_text('export ERL_FLAGS="-kernel inet_dist_use_interface {127,0,0,1}"\n')
        (self.base / "rabbitmq.conf").write_text(
            f"listeners.tcp.default = 127.0.0.1:{self.port}\n"
            "loopback_users = none\n"
            # A test node must not stop accepting publishes because the disk of a busy CI machine fills up.
            "disk_free_limit.absolute = 50MB\n"
        )
        (self.base / "enabled_plugins").write_text("[].\n")
        cookie = self.base / ".erlang.cookie"
        if not cookie.exists():
            cookie.write_text(os.urandom(16).hex().upper())
            cookie.chmod(0o400)

    def start(self, timeout: float = 90.0) -> None:
        """Start detached with the file limit raised; return once it completes an AMQP handshake."""
        self._write_files()
        # `ulimit -n` to the hard limit, then exec the inner server script (no `su`, so the limit is kept).
        script = f'ulimit -n "$(ulimit -Hn)" && exec {RABBITMQ_SERVER} -detached'
        subprocess.run(
            ["sh", "-c", script],
            env=self.env(),
            check=True,
            timeout=60,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        deadline = time.monotonic() + timeout
        why: str | None = "not started"
        while time.monotonic() < deadline:
            if not _port_open(self.port):  # still booting: no need for an AMQP client (and its error logs) yet
                why = "port not open yet"
                time.sleep(0.2)
                continue
            why = handshake_ok(self.url, timeout=min(5.0, max(0.5, deadline - time.monotonic())))
            if why is None:
                return
            time.sleep(0.5)
        self.stop()
        raise RuntimeError(
            f"RabbitMQ node {self.name} did not answer AMQP within {timeout:g} s ({why}); log: {self.base / 'log'}"
        )

    def pid(self) -> int | None:
        try:
            return int(self.pid_file.read_text().strip())
        except (OSError, ValueError):
            return beam_pid_listening_on(self.port)

    def fd_limits(self) -> tuple[int, int] | None:
        pid = self.pid()
        return fd_limits(pid) if pid else None

    def check_fd_limit(self, minimum: int = MINIMUM_FD_LIMIT) -> int:
        """The node's soft open-file limit; raises if it is below ``minimum``."""
        limits = self.fd_limits()
        if limits is None:
            raise RuntimeError(f"cannot read the open-file limit of RabbitMQ node {self.name} (pid {self.pid()})")
        if limits[0] < minimum:
            raise RuntimeError(
                f"RabbitMQ node {self.name} runs with an open-file limit of {limits[0]} "
                f"(needs at least {minimum}); raise the hard limit (`ulimit -Hn`)"
            )
        return limits[0]

    def ctl(self, *args: str, timeout: float = 15.0) -> subprocess.CompletedProcess[str]:
        """rabbitmqctl against this node; never waits longer than ``timeout`` (a wedged node hangs it)."""
        return subprocess.run(
            [RABBITMQCTL, "-n", self.name, *args],
            env=self.env(),
            capture_output=True,
            text=True,
            timeout=timeout,
            check=False,
        )

    def stop(self, timeout: float = 30.0) -> None:
        """Stop the node (rabbitmqctl, then signals: a wedged node may ignore the first) and remove its data."""
        pid = self.pid()
        with contextlib.suppress(subprocess.TimeoutExpired, OSError):
            self.ctl("stop", timeout=timeout)
        if pid is not None:
            for sig, wait in ((signal.SIGTERM, 10.0), (signal.SIGKILL, 5.0)):
                if not _alive(pid):
                    break
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, sig)
                deadline = time.monotonic() + wait
                while _alive(pid) and time.monotonic() < deadline:
                    time.sleep(0.1)
        if not self.keep_data:
            shutil.rmtree(self.base, ignore_errors=True)

    def stop_app(self, timeout: float = 30.0) -> None:
        """Stop the RabbitMQ application, keep the VM (clients see the broker gone; fault tests)."""
        self.ctl("stop_app", timeout=timeout).check_returncode()

    def start_app(self, timeout: float = 60.0) -> None:
        self.ctl("start_app", timeout=timeout).check_returncode()


def _port_open(port: int) -> bool:
    with socket.socket() as s:
        s.settimeout(1.0)
        return s.connect_ex(("127.0.0.1", port)) == 0


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    # A zombie (our own detached child that nobody reaped) counts as gone.
    try:
        return "State:\tZ" not in Path(f"/proc/{pid}/status").read_text()
    except OSError:
        return False


def local_node_for(url: str) -> LocalNode | None:
    """The node behind ``url`` if it runs on this machine (so rabbitmqctl and /proc can see it)."""
    parsed = urlsplit(url)
    if parsed.hostname not in ("127.0.0.1", "localhost", "::1"):
        return None
    return LocalNode.find(parsed.port or 5672)


async def delete_prefix(
    url: str,
    prefix: str,
    known_queues: Iterable[str] = (),
    known_exchanges: Iterable[str] = (),
    *,
    timeout: float = 10.0,
) -> int:
    """Delete every queue and exchange whose name starts with ``prefix`` (listed through rabbitmqctl where the
    node runs here) plus the ``known_*`` names (the only way for a remote broker); returns the queues deleted."""
    if not prefix:
        raise ValueError("refusing to delete every queue of the broker: empty prefix")
    queues, exchanges = set(known_queues), set(known_exchanges)
    node = await asyncio.to_thread(local_node_for, url)
    if node is not None:
        listed = await asyncio.to_thread(node.queues, timeout)
        queues.update(n for n, _, _ in listed or () if n.startswith(prefix))
        listed_ex = await asyncio.to_thread(node.exchanges, timeout)
        exchanges.update(n for n in listed_ex or () if n.startswith(prefix))
    return await _delete(url, queues, exchanges, timeout)


async def _delete(url: str, queues: Iterable[str], exchanges: Iterable[str], timeout: float) -> int:
    deleted = 0
    conn = await asyncio.wait_for(aio_pika.connect(url, timeout=timeout), timeout=timeout)
    try:
        channel = await conn.channel()
        for name in sorted(queues):
            try:
                await asyncio.wait_for(channel.queue_delete(name), timeout=timeout)
                deleted += 1
            except Exception as exc:
                log.debug("queue_delete_failed", queue=name, error=repr(exc)[:200])
                channel = await conn.channel()
        for name in sorted(exchanges):
            try:
                await asyncio.wait_for(channel.exchange_delete(name), timeout=timeout)
            except Exception as exc:
                log.debug("exchange_delete_failed", exchange=name, error=repr(exc)[:200])
                channel = await conn.channel()
    finally:
        with contextlib.suppress(Exception):
            await asyncio.wait_for(conn.close(), timeout=timeout)
    return deleted


async def sweep_stale(url: str, starts_with: str = "test-", timeout: float = 10.0) -> tuple[int, int]:
    """Delete what crashed earlier runs (prefix ``starts_with``...) left on a local broker: (runs, queues)."""
    node = await asyncio.to_thread(local_node_for, url)
    if node is None:
        return 0, 0
    listed = await asyncio.to_thread(node.queues, timeout)
    if not listed:
        return 0, 0
    runs = stale_prefixes(listed, starts_with)
    if not runs:
        return 0, 0
    exchanges = await asyncio.to_thread(node.exchanges, timeout) or []
    # Quorum queues refuse queue.delete's if-unused flag, so the listing's consumer count decides.
    queues = [n for n, consumers, _ in listed if consumers == 0 and n.split(".", 1)[0] + "." in runs]
    dead_exchanges = [n for n in exchanges if n.split(".", 1)[0] + "." in runs]
    return len(runs), await _delete(url, queues, dead_exchanges, timeout)


def main(argv: list[str] | None = None) -> int:
    """`python -m ticketing.broker_node check URL | start DIR | stop DIR`, for shell scripts (`.ci/run`)."""
    parser = argparse.ArgumentParser(prog="python -m ticketing.broker_node")
    sub = parser.add_subparsers(dest="cmd", required=True)
    check = sub.add_parser("check", help="exit 0 if URL completes an AMQP handshake within --timeout s")
    check.add_argument("url")
    check.add_argument("--timeout", type=float, default=10.0)
    start = sub.add_parser("start", help="start a node with everything under DIR; print its AMQP URL")
    start.add_argument("dir")
    start.add_argument("--port", type=int, default=0)
    start.add_argument("--label", default="ticketing-ci")
    stop = sub.add_parser("stop", help="stop the node started under DIR and remove DIR")
    stop.add_argument("dir")
    args = parser.parse_args(argv)

    if args.cmd == "check":
        why = handshake_ok(args.url, args.timeout)
        if why is not None:
            where = urlsplit(args.url)  # host and port only: the URL carries the password
            print(f"RabbitMQ at {where.hostname}:{where.port or 5672}: {why}", file=sys.stderr)
            return 1
        return 0
    base = Path(args.dir)
    if args.cmd == "start":
        base.mkdir(parents=True, exist_ok=True)
        node = BrokerNode.create(args.label, args.port, base)
        (base / "node").write_text(f"{node.name} {node.port} {node.dist_port}\n")
        node.start()
        limit = node.check_fd_limit()
        print(f"started RabbitMQ node {node.name} on port {node.port} (open-file limit {limit})", file=sys.stderr)
        print(node.url)
        return 0
    try:
        name, port, dist_port = (base / "node").read_text().split()
    except (OSError, ValueError):
        print(f"no node under {base}", file=sys.stderr)
        return 1
    BrokerNode(name=name, port=int(port), dist_port=int(dist_port), base=base).stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
