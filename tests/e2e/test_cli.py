"""The `ticketing` command as a user meets it: its version, a server that is down, progress, --json."""

from __future__ import annotations

import asyncio
import json
import mailbox
import os
import subprocess
import sys
import uuid
from email.message import EmailMessage
from functools import partial
from importlib.metadata import version
from pathlib import Path

import click
import pytest

from shared import topology
from tests.harness import Stack, eventually, free_port
from tests.mailer_support import dead_letters, publish
from ticketing.cli import main


def ticketing(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "ticketing.cli", *args],
        env=env or dict(os.environ),
        capture_output=True,
        text=True,
        timeout=120,
    )


def test_version() -> None:
    result = ticketing("--version")
    assert result.returncode == 0
    assert result.stdout.strip() == f"ticketing, version {version('ticketing')}"


def closed_port() -> int:
    return free_port()  # bound and released: nothing listens there


@pytest.mark.parametrize(
    ("args", "setting", "server", "url"),
    [
        (
            ("dlq", "groups"),
            "TICKETING_DATABASE_URL",
            "PostgreSQL",
            "postgresql+asyncpg://postgres:s3cret-pw@127.0.0.1:{port}/ticketing",
        ),
        (
            ("migrate",),
            "TICKETING_DATABASE_URL",
            "PostgreSQL",
            "postgresql+asyncpg://postgres:s3cret-pw@127.0.0.1:{port}/ticketing",
        ),
        (("dlq", "ls"), "TICKETING_RABBITMQ_URL", "RabbitMQ", "amqp://guest:s3cret-pw@127.0.0.1:{port}/"),
        (
            ("payments", "review", "ls"),
            "TICKETING_RABBITMQ_URL",
            "RabbitMQ",
            "amqp://guest:s3cret-pw@127.0.0.1:{port}/",
        ),
        (("search", "reindex"), "TICKETING_REDIS_URL", "Redis", "redis://:s3cret-pw@127.0.0.1:{port}/0"),
    ],
)
def test_a_server_that_is_down_gives_one_line_with_a_hint_and_no_traceback(
    args: tuple[str, ...],
    setting: str,
    server: str,
    url: str,
) -> None:
    port = closed_port()
    result = ticketing(*args, env={**os.environ, setting: url.format(port=port)})

    assert result.returncode == 1
    assert result.stdout == ""
    (line,) = result.stderr.strip().splitlines()
    assert line.startswith(f"Error: cannot reach {server} at 127.0.0.1:{port} ")
    assert "start it (`" in line and setting in line
    assert "s3cret-pw" not in line  # the URL's password is never printed
    assert "Traceback" not in result.stderr


def test_every_listing_command_takes_json() -> None:
    listings: list[str] = []

    def walk(group: click.Group, path: str) -> None:
        for name, cmd in group.commands.items():
            if isinstance(cmd, click.Group):
                walk(cmd, f"{path} {name}")
            elif name in ("ls", "groups", "messages", "audit"):
                listings.append(f"{path} {name}")
                assert "as_json" in {p.name for p in cmd.params}, f"`{path} {name}` has no --json"

    walk(main, "ticketing")
    assert {
        "ticketing mail ls",
        "ticketing dlq ls",
        "ticketing dlq groups",
        "ticketing payments review ls",
        "ticketing payments refunds ls",
        "ticketing dlq audit",
    } <= set(listings)


def test_mail_ls_json_lists_what_the_sink_holds(tmp_path: Path) -> None:
    box = mailbox.Maildir(str(tmp_path / "mail"), create=True)
    msg = EmailMessage()
    msg["To"], msg["Subject"] = "alice@example.com", "Vé của bạn"
    msg.set_content("hello")
    box.add(msg)
    env = {**os.environ, "TICKETING_MAIL_SINK_DIR": str(tmp_path / "mail")}

    result = ticketing("mail", "ls", "--json", env=env)

    assert result.returncode == 0, result.stderr
    (row,) = json.loads(result.stdout)
    assert row | {"received": ""} == {
        "number": 1,
        "received": "",
        "to": "alice@example.com",
        "subject": "Vé của bạn",
        "attachments": 0,
    }


async def test_dlq_replay_shows_progress_and_search_reindex_too(stack: Stack) -> None:
    mids = [f"junk-checkout:{uuid.uuid4()}" for _ in range(3)]
    for mid in mids:
        await publish(stack, topology.CHECKOUT_REQUESTED, b'{"order_id": 42}', mid)
    ids = []
    for mid in mids:
        ids.append((await eventually(partial(dead_letters, stack, mid), what="inventory dead letter"))[0]["id"])

    args = ["dlq", "replay", "inventory", "--rate", "100"] + [a for i in ids for a in ("--id", str(i))]
    result = await asyncio.to_thread(ticketing, *args, env=stack.env)
    assert result.returncode == 0, result.stderr
    assert "replaying inventory" in result.stderr and "3/3" in result.stderr
    assert "replayed 3 of 3 matching dead letters of inventory" in result.stdout

    await stack.create_event(title="Progress check")
    result = await asyncio.to_thread(ticketing, "search", "reindex", env=stack.env)
    assert result.returncode == 0, result.stderr
    assert "indexing events" in result.stderr
    assert result.stdout.startswith("indexed ")
