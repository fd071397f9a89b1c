"""`python -m ticketing.healthcheck [SERVICE]`: exit 0 when this container's service answers /readyz.

One image runs every service (`python -m services.<name>`), so the Docker HEALTHCHECK finds which one this
container runs from the process list and asks it on its own port. Standard library only: it runs every few
seconds and must start fast.
"""

from __future__ import annotations

import sys
import urllib.request
from pathlib import Path

from shared.settings import get_settings


def running_service() -> str | None:
    """The ``services.<name>`` module some process in this container runs (PID 1 first)."""
    pids = ["1", *sorted((p.name for p in Path("/proc").iterdir() if p.name.isdigit()), key=int)]
    for pid in pids:
        try:
            argv = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
        except OSError:
            continue
        for arg in argv:
            if arg.startswith(b"services.") and arg.count(b".") == 1:
                return arg.decode()[len("services.") :]
    return None


def port_of(service: str) -> int:
    settings = get_settings()
    ports = {
        "gateway": settings.gateway_port,
        "inventory": settings.inventory_port,
        "payment": settings.payment_port,
        "mailer": settings.mailer_port,
        "search": settings.search_port,
        "ops": settings.ops_port,
        "paysim": settings.paysim_port,
    }
    return ports[service]


def main(argv: list[str]) -> int:
    service = argv[0] if argv else running_service()
    if service is None:
        print("no ticketing service runs in this container", file=sys.stderr)
        return 1
    url = f"http://127.0.0.1:{port_of(service)}/readyz"
    try:
        with urllib.request.urlopen(url, timeout=3) as response:
            return 0 if response.status == 200 else 1
    except OSError as exc:
        print(f"{service}: {url}: {exc}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
