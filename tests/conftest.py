"""Fixtures on real servers. A missing server fails the run with the command that starts it; it never skips."""

from __future__ import annotations

import os
import sys
from collections.abc import AsyncIterator, Callable, Iterator
from contextlib import ExitStack

import pytest

from shared.settings import Settings, get_settings
from tests.containers import servers_named, start_containers
from tests.harness import (
    Stack,
    check_servers,
    docker_engine_available,
    own_broker_if_sick,
    run_environment,
    running_stack,
    sweep_stale_test_queues,
)

# Hold durations the tests use; their delay queues are deleted after the run.
HOLD_DURATIONS = (1, 2, 3, 4, 5, 6, 30, 900)


@pytest.fixture(scope="session")
def server_settings(request: pytest.FixtureRequest) -> Iterator[Settings]:
    """The servers the settings name (localhost by default); testcontainers where a Docker engine exists
    and none is named; otherwise the run fails saying what to start. A broker that does not complete an AMQP
    handshake in time (down, or wedged: TCP accepted, no handshake) is replaced by a node of the run's own."""
    with ExitStack() as resources:
        if not servers_named() and docker_engine_available():
            os.environ.update(start_containers(resources))
        settings = Settings()
        node_url = own_broker_if_sick(settings, resources, say=_say(request))
        if node_url is not None:
            os.environ["TICKETING_RABBITMQ_URL"] = node_url
            settings = Settings()
        yield settings


def _say(request: pytest.FixtureRequest) -> Callable[[str], None]:
    """One line on the terminal even while pytest captures output (fixtures run captured)."""
    reporter = request.config.pluginmanager.get_plugin("terminalreporter")
    capture = request.config.pluginmanager.get_plugin("capturemanager")

    def say(line: str) -> None:
        if reporter is None or capture is None:  # pragma: no cover - pytest without its terminal
            print(line, file=sys.stderr)
            return
        with capture.global_and_fixture_disabled():
            reporter.write_line("")
            reporter.write_line(line)

    return say


@pytest.fixture(scope="session")
async def stack(server_settings: Settings, request: pytest.FixtureRequest) -> AsyncIterator[Stack]:
    base = server_settings
    missing = await check_servers(base)
    if missing:
        pytest.fail("the tests need real servers:\n  " + "\n  ".join(missing), pytrace=False)
    await sweep_stale_test_queues(base, _say(request))
    env = run_environment(base)
    os.environ.update({k: v for k, v in env.items() if k.startswith("TICKETING_")})
    get_settings.cache_clear()
    settings = get_settings()
    async with running_stack(env, settings, quiet=False, hold_durations=HOLD_DURATIONS) as s:
        yield s
