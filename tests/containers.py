"""Servers for the tests from testcontainers, used only where a Docker engine exists and no server is named
(no TICKETING_DATABASE_URL / TICKETING_RABBITMQ_URL / TICKETING_REDIS_URL in the environment)."""

from __future__ import annotations

import os
from contextlib import ExitStack
from typing import Any

SERVER_VARIABLES = ("TICKETING_DATABASE_URL", "TICKETING_RABBITMQ_URL", "TICKETING_REDIS_URL")


def servers_named() -> bool:
    return any(os.environ.get(v) for v in SERVER_VARIABLES)


def start_containers(stack: ExitStack) -> dict[str, str]:
    """Start PostgreSQL 15, RabbitMQ 3.10 and Redis 7; return the settings that point at them."""
    try:
        from testcontainers.postgres import PostgresContainer
        from testcontainers.rabbitmq import RabbitMqContainer
        from testcontainers.redis import RedisContainer
    except ImportError as exc:  # pragma: no cover - depends on the machine
        raise RuntimeError(
            "a Docker engine is available but testcontainers is not installed: "
            "`.venv/bin/pip install -e '.[containers]'`, or name your servers with " + ", ".join(SERVER_VARIABLES)
        ) from exc
    pg: Any = stack.enter_context(PostgresContainer("postgres:15", username="postgres", password="postgres"))
    mq: Any = stack.enter_context(RabbitMqContainer("rabbitmq:3.10"))
    rd: Any = stack.enter_context(RedisContainer("redis:7"))
    return {
        "TICKETING_DATABASE_URL": (
            f"postgresql+asyncpg://postgres:postgres@{pg.get_container_host_ip()}:{pg.get_exposed_port(5432)}/postgres"
        ),
        "TICKETING_RABBITMQ_URL": (f"amqp://guest:guest@{mq.get_container_host_ip()}:{mq.get_exposed_port(5672)}/"),
        "TICKETING_REDIS_URL": f"redis://{rd.get_container_host_ip()}:{rd.get_exposed_port(6379)}/0",
    }
