"""`ticketing up`: run every service as its own process (as in production, where each is scaled alone).

``scale`` runs several processes of a service (``ticketing up --scale inventory=2,gateway=2``). The consumer
services are competing consumers of their quorum queues, so a replica needs nothing but a port of its own for
its health/metrics server: replica k listens on ``TICKETING_<SERVICE>_PORT + 100 * (k - 1)``. The first
replica is exactly what one process is today; the stride is 100 because the default ports are consecutive
(8101-8106), so ``+ k - 1`` would put inventory-2 on the payment service's port. Gateway replicas share the
one API port through ``SO_REUSEPORT`` (the kernel spreads connections over them), so one machine needs no
load balancer in front.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Mapping
from dataclasses import dataclass, field

SERVICES: tuple[str, ...] = ("inventory", "payment", "mailer", "ops", "search", "gateway")
# Services that serve one public port together (SO_REUSEPORT) instead of one port each.
SHARED_PORT_SERVICES = frozenset({"gateway"})
REPLICA_PORT_STRIDE = 100


def _payment_simulator() -> tuple[str, ...]:
    """The offline VNPAY simulator runs where settings allow it: development and test, never production."""
    from shared.settings import get_settings

    return ("paysim",) if get_settings().paysim_active else ()


SERVICES += _payment_simulator()


def parse_scale(spec: str, known: tuple[str, ...] = SERVICES) -> dict[str, int]:
    """``"inventory=2,gateway=2"`` -> ``{"inventory": 2, "gateway": 2}``; a count below 1 or an unknown service
    is a ValueError (whose message is what the user sees)."""
    out: dict[str, int] = {}
    for part in filter(None, (p.strip() for p in spec.split(","))):
        name, sep, count = part.partition("=")
        name = name.strip()
        if not sep or not count.strip().isdigit():
            raise ValueError(f"{part!r}: expected SERVICE=COUNT, e.g. inventory=2")
        if name not in known:
            raise ValueError(f"{name!r} is not a service; the services are {', '.join(known)}")
        if int(count) < 1:
            raise ValueError(f"{part!r}: a service runs at least one process")
        out[name] = int(count)
    return out


def replica_names(service: str, count: int) -> list[str]:
    """``inventory``, ``inventory-2``, ...: the first keeps the service's own name (tests and logs use it)."""
    return [service] + [f"{service}-{k}" for k in range(2, count + 1)]


def port_variable(service: str) -> str:
    return f"TICKETING_{service.upper()}_PORT"


def base_port(service: str, env: Mapping[str, str]) -> int:
    """The port the service's first process uses: from ``env`` or the settings' default (what the child sees)."""
    from shared.settings import Settings

    value = env.get(port_variable(service))
    if value is not None:
        return int(value)
    default = Settings.model_fields[f"{service}_port"].default
    return int(default)


def replica_port(base: int, k: int) -> int:
    """The health/metrics port of replica k; port 0 turns a consumer's HTTP side off, and its replicas' too."""
    if not base:
        return 0
    port = base + REPLICA_PORT_STRIDE * (k - 1)
    if port > 65_535:
        raise ValueError(f"replica {k} would listen on port {port}: choose a lower base port")
    return port


@dataclass
class Supervisor:
    env: Mapping[str, str] = field(default_factory=lambda: dict(os.environ))
    services: tuple[str, ...] = SERVICES
    restart: bool = True
    quiet: bool = False
    scale: Mapping[str, int] = field(default_factory=dict)  # service -> processes (1 when absent)
    procs: dict[str, subprocess.Popen[bytes]] = field(default_factory=dict)  # by process name (replica names)

    def replicas(self, service: str) -> list[str]:
        return replica_names(service, self.scale.get(service, 1))

    def start(self) -> None:
        for service in self.services:
            for name in self.replicas(service):
                self._spawn(name)

    def _service_of(self, name: str) -> tuple[str, int]:
        """``inventory-2`` -> ("inventory", 2); a service's own name is replica 1."""
        service, _, k = name.rpartition("-")
        if service in self.services and k.isdigit():
            return service, int(k)
        return name, 1

    def process_env(self, name: str) -> dict[str, str]:
        """The environment of one process: the supervisor's, plus what keeps replicas from clashing."""
        service, k = self._service_of(name)
        env = dict(self.env)
        env["TICKETING_REPLICA"] = name  # logs and /metrics name the process (see services/gateway/__main__.py)
        if self.scale.get(service, 1) > 1 and service in SHARED_PORT_SERVICES:
            env["TICKETING_GATEWAY_REUSE_PORT"] = "true"
        elif k > 1:
            env[port_variable(service)] = str(replica_port(base_port(service, self.env), k))
        return env

    def _spawn(self, name: str) -> None:
        service, _ = self._service_of(name)
        out = subprocess.DEVNULL if self.quiet else None
        self.procs[name] = subprocess.Popen(
            [sys.executable, "-m", f"services.{service}"],
            env=self.process_env(name),
            stdout=out,
            stderr=out,
        )

    def stop_service(self, name: str, sig: int = signal.SIGTERM, timeout: float = 20.0) -> None:
        """Stop one process by its name (``inventory`` is the first replica, ``inventory-2`` the second)."""
        proc = self.procs.get(name)
        if proc is None or proc.poll() is not None:
            return
        proc.send_signal(sig)
        _wait_or_kill(proc, timeout)

    def start_service(self, name: str) -> None:
        self._spawn(name)

    def stop(self) -> None:
        for service in reversed(self.services):  # the gateway first: stop taking requests
            names = [n for n in self.replicas(service) if n in self.procs]
            for name in names:  # signal every replica first, so they drain in parallel
                proc = self.procs[name]
                if proc.poll() is None:
                    proc.send_signal(signal.SIGTERM)
            for name in names:
                _wait_or_kill(self.procs[name], 20.0)

    def watch(self, stop_flag: list[bool]) -> None:
        """Restart a process that dies (with a pause), until stop_flag[0] is set."""
        while not stop_flag[0]:
            for name, proc in list(self.procs.items()):
                code = proc.poll()
                if code is not None and self.restart and not stop_flag[0]:
                    print(f"[ticketing] {name} exited with {code}; restarting", file=sys.stderr)
                    time.sleep(1.0)
                    self._spawn(name)
            time.sleep(0.5)


def _wait_or_kill(proc: subprocess.Popen[bytes], timeout: float) -> None:
    try:
        proc.wait(timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()
