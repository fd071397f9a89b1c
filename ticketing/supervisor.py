"""`ticketing up`: run every service as its own process (as in production, where each is scaled alone)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Mapping
from dataclasses import dataclass, field

SERVICES: tuple[str, ...] = ("inventory", "payment", "mailer", "ops", "search", "gateway")


def _payment_simulator() -> tuple[str, ...]:
    """The offline VNPAY simulator runs where settings allow it: development and test, never production."""
    from shared.settings import get_settings

    return ("paysim",) if get_settings().paysim_active else ()


SERVICES += _payment_simulator()


@dataclass
class Supervisor:
    env: Mapping[str, str] = field(default_factory=lambda: dict(os.environ))
    services: tuple[str, ...] = SERVICES
    restart: bool = True
    quiet: bool = False
    procs: dict[str, subprocess.Popen[bytes]] = field(default_factory=dict)

    def start(self) -> None:
        for name in self.services:
            self._spawn(name)

    def _spawn(self, name: str) -> None:
        out = subprocess.DEVNULL if self.quiet else None
        self.procs[name] = subprocess.Popen(
            [sys.executable, "-m", f"services.{name}"], env=dict(self.env), stdout=out, stderr=out,
        )

    def stop_service(self, name: str, sig: int = signal.SIGTERM, timeout: float = 20.0) -> None:
        proc = self.procs.get(name)
        if proc is None or proc.poll() is not None:
            return
        proc.send_signal(sig)
        try:
            proc.wait(timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()

    def start_service(self, name: str) -> None:
        self._spawn(name)

    def stop(self) -> None:
        for name in reversed(self.services):  # the gateway first: stop taking requests
            self.stop_service(name)

    def watch(self, stop_flag: list[bool]) -> None:
        """Restart a service that dies (with a pause), until stop_flag[0] is set."""
        while not stop_flag[0]:
            for name, proc in list(self.procs.items()):
                code = proc.poll()
                if code is not None and self.restart and not stop_flag[0]:
                    print(f"[ticketing] {name} exited with {code}; restarting", file=sys.stderr)
                    time.sleep(1.0)
                    self._spawn(name)
            time.sleep(0.5)
