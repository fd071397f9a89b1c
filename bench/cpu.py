"""CPU accounting per process over a measurement window, from /proc (psutil).

Every service of the stack is its own process (the supervisor's PIDs, children included). The servers are shared
with other work on the machine, so they are attributed as precisely as the system allows:

- ``postgres``: the backends (and autovacuum workers) connected to *this run's* database, found in
  ``pg_stat_activity`` at the start and at the end of the window (a backend born inside the window counts whole);
- ``pg-aux``: PostgreSQL's own processes that belong to no database (WAL writer, checkpointer, background writer,
  the postmaster): shared with every other database on the server, so other work shows up here too;
- ``rabbitmq``: ``beam.smp``, shared with every other user of the broker;
- ``redis``: ``redis-server``, shared likewise.

The machine's total busy CPU over the same window is recorded as well: ``others`` = machine busy minus everything
above and the benchmark client, which is how much the rest of the machine took while we measured.
"""

from __future__ import annotations

import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field

import asyncpg
import psutil

SHARED_SERVERS = {"rabbitmq": ("beam.smp",), "redis": ("redis-server",)}


def _cpu_seconds(pid: int, with_children: bool = True) -> float:
    """User + system CPU seconds of a process (and, by default, its live children)."""
    try:
        proc = psutil.Process(pid)
        t = proc.cpu_times()
        total = t.user + t.system
        if with_children:
            for child in proc.children(recursive=True):
                try:
                    c = child.cpu_times()
                    total += c.user + c.system
                except psutil.Error:
                    continue
        return float(total)
    except psutil.Error:
        return 0.0


def _pids_named(names: Iterable[str]) -> list[int]:
    wanted = set(names)
    out: list[int] = []
    for p in psutil.process_iter(["name"]):
        if p.info["name"] in wanted:
            out.append(p.pid)
    return out


@dataclass
class Snapshot:
    at: float
    per_pid: dict[str, dict[int, float]]
    machine_busy: float


@dataclass
class CpuWindow:
    """CPU seconds per group over one window; ``per_decision_ms`` divides by the decisions made in it."""

    seconds: float
    groups: dict[str, float]
    machine_busy: float
    cores: int = field(default_factory=lambda: psutil.cpu_count() or 1)

    @property
    def ours(self) -> float:
        return sum(v for k, v in self.groups.items() if k not in ("pg-aux", "rabbitmq", "redis", "client"))

    @property
    def stack(self) -> float:
        """Everything the pipeline used: services, their database backends and the shared servers."""
        return sum(v for k, v in self.groups.items() if k != "client")

    @property
    def others(self) -> float:
        return max(0.0, self.machine_busy - sum(self.groups.values()))

    def per_decision_ms(self, decisions: int) -> dict[str, float]:
        n = max(1, decisions)
        out = {k: v * 1000 / n for k, v in self.groups.items()}
        out["stack total"] = self.stack * 1000 / n
        out["others (not ours)"] = self.others * 1000 / n
        return out

    def utilisation(self) -> dict[str, float]:
        """Share of one core per group over the window (1.0 = one core fully busy)."""
        s = max(self.seconds, 1e-9)
        return {k: v / s for k, v in self.groups.items()}


class CpuMeter:
    """Snapshots of CPU time for the stack's processes; ``window(a, b)`` is the difference."""

    def __init__(self, services: Mapping[str, int], db: asyncpg.Pool, database: str, client_pid: int) -> None:
        self.services = dict(services)
        self.db = db
        self.database = database
        self.client_pid = client_pid

    async def _postgres_pids(self) -> tuple[list[int], list[int]]:
        """(backends of our database, postgres processes of no database)."""
        rows = await self.db.fetch("SELECT pid, datname FROM pg_stat_activity")
        ours = [r["pid"] for r in rows if r["datname"] == self.database]
        in_some_db = {r["pid"] for r in rows if r["datname"] is not None}
        aux = [p for p in _pids_named(("postgres",)) if p not in in_some_db]
        return ours, aux

    async def snapshot(self) -> Snapshot:
        ours, aux = await self._postgres_pids()
        per_pid: dict[str, dict[int, float]] = {}
        for name, pid in self.services.items():  # replicas (``gateway-2``) count with their service
            service, _, k = name.rpartition("-")
            per_pid.setdefault(service if service and k.isdigit() else name, {})[pid] = _cpu_seconds(pid)
        per_pid["postgres"] = {pid: _cpu_seconds(pid, with_children=False) for pid in ours}
        per_pid["pg-aux"] = {pid: _cpu_seconds(pid, with_children=False) for pid in aux}
        for group, names in SHARED_SERVERS.items():
            per_pid[group] = {pid: _cpu_seconds(pid, with_children=False) for pid in _pids_named(names)}
        per_pid["client"] = {self.client_pid: _cpu_seconds(self.client_pid, with_children=False)}
        t = psutil.cpu_times()
        busy = (
            t.user + t.nice + t.system + getattr(t, "irq", 0.0) + getattr(t, "softirq", 0.0) + getattr(t, "steal", 0.0)
        )
        return Snapshot(time.perf_counter(), per_pid, float(busy))

    async def finish(self, start: Snapshot) -> CpuWindow:
        end = await self.snapshot()
        # Backends of our database that were born inside the window: read them again so they count whole.
        groups: dict[str, float] = {}
        for group, pids in end.per_pid.items():
            before = start.per_pid.get(group, {})
            total = 0.0
            for pid, secs in pids.items():
                total += max(0.0, secs - before.get(pid, 0.0))
            groups[group] = total
        return CpuWindow(end.at - start.at, groups, max(0.0, end.machine_busy - start.machine_busy))


SERVICE_ORDER = (
    "gateway",
    "inventory",
    "payment",
    "mailer",
    "search",
    "ops",
    "paysim",
    "rabbitmq",
    "postgres",
    "pg-aux",
    "redis",
    "stack total",
    "client",
    "others (not ours)",
)
