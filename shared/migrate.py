"""Apply the Alembic migrations (``ticketing migrate``; ``ticketing up`` does it first)."""

from __future__ import annotations

import asyncio
import threading
from pathlib import Path

from alembic import command
from alembic.config import Config

MIGRATIONS = Path(__file__).resolve().parent.parent / "migrations"


def alembic_config(database_url: str) -> Config:
    cfg = Config(str(MIGRATIONS / "alembic.ini"))
    cfg.set_main_option("script_location", str(MIGRATIONS))
    cfg.set_main_option("sqlalchemy.url", database_url)
    return cfg


def upgrade(database_url: str) -> None:
    """Upgrade to every head (each service's migrations branch from 0001).

    Safe to call from inside a running event loop (it then runs in its own thread).
    """
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        command.upgrade(alembic_config(database_url), "heads")
        return
    errors: list[BaseException] = []

    def _target() -> None:
        try:
            command.upgrade(alembic_config(database_url), "heads")
        except BaseException as exc:
            errors.append(exc)

    t = threading.Thread(target=_target)
    t.start()
    t.join()
    if errors:
        raise errors[0]
