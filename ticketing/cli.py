"""The `ticketing` command: run the stack, the demo, migrations, and issue tokens."""

from __future__ import annotations

import asyncio
import signal
import sys

import click

from services.inventory.cli import events_group, orders_group
from services.inventory.door_cli import checkin
from services.mailer.cli import mail_group
from services.ops.cli import dlq_group
from services.payment.cli import payments_group
from services.search.cli import search as search_group
from shared import migrate
from shared.db import create_database_if_missing
from shared.settings import get_settings
from ticketing.errors import FriendlyGroup


@click.group(cls=FriendlyGroup)
@click.version_option(package_name="ticketing", prog_name="ticketing")
def main() -> None:
    """ticketing: a message-driven backend that sells event tickets."""


def prepare_database() -> None:
    settings = get_settings()
    # A server that is down is reported in one line by FriendlyGroup (without the URL's password).
    if asyncio.run(create_database_if_missing(settings.database_url)):
        click.echo("created the database", err=True)
    migrate.upgrade(settings.database_url)


@main.command("migrate")
def migrate_cmd() -> None:
    """Create the database if needed and apply every migration."""
    prepare_database()
    click.echo("migrations applied")


@main.command()
@click.option("--no-migrate", is_flag=True, help="Skip the migrations (they are applied by default).")
@click.option(
    "--scale",
    "scale_spec",
    default="",
    metavar="SERVICE=N,...",
    help="Processes per service, e.g. inventory=2,gateway=2 (competing consumers; the gateways share the API port).",
)
def up(no_migrate: bool, scale_spec: str) -> None:
    """Start every service as its own process; runs until Ctrl-C."""
    from ticketing.supervisor import Supervisor, parse_scale

    try:
        scale = parse_scale(scale_spec)
    except ValueError as exc:
        raise click.BadParameter(str(exc), param_hint="--scale") from None
    if not no_migrate:
        prepare_database()
    settings = get_settings()
    sup = Supervisor(scale=scale)
    sup.start()
    click.echo(f"ticketing is up: http://{settings.gateway_host}:{settings.gateway_port}/docs (Ctrl-C stops)", err=True)
    if scale:
        click.echo("processes: " + ", ".join(name for s in sup.services for name in sup.replicas(s)), err=True)
    stop = [False]

    def _stop(*_: object) -> None:
        stop[0] = True

    signal.signal(signal.SIGINT, _stop)
    signal.signal(signal.SIGTERM, _stop)
    try:
        sup.watch(stop)
    finally:
        sup.stop()


@main.command()
@click.option("--timeout", default=5.0, show_default=True, help="Seconds each dependency gets to answer.")
def doctor(timeout: float) -> None:
    """Reach every dependency (a real handshake each) and report the broker's file and queue budget."""
    from ticketing.doctor import diagnose, render

    settings = get_settings()
    report = asyncio.run(diagnose(settings, timeout))
    for line in render(report, settings):
        click.echo(line)
    if not report.ok:
        sys.exit(1)


@main.command()
@click.option("--user", "sub", default="alice", show_default=True, help="The token's subject (user id).")
@click.option("--email", default=None, help="Defaults to <user>@example.com.")
@click.option("--admin", is_flag=True, help="Give the token the admin role.")
@click.option("--scanner", is_flag=True, help="Give the token the scanner role (door staff: check-in only).")
@click.option("--locale", default="vi", show_default=True, type=click.Choice(["vi", "en"]))
@click.option("--ttl", default=86_400, show_default=True, help="Lifetime in seconds.")
def token(sub: str, email: str | None, admin: bool, scanner: bool, locale: str, ttl: int) -> None:
    """Print a bearer token for a user (or an admin, or door staff)."""
    from services.gateway.auth import ADMIN, SCANNER, issue_token

    roles = [role for role, wanted in ((ADMIN, admin), (SCANNER, scanner)) if wanted]
    click.echo(issue_token(get_settings(), sub, email or f"{sub}@example.com", roles, ttl, locale))


@main.command()
@click.option("--buyers", default=300, show_default=True, help="Concurrent buyers in the flash sale.")
@click.option("--tickets", default=100, show_default=True, help="Tickets on sale.")
@click.option("--hold-seconds", default=20, show_default=True, help="How long an unpaid hold lasts.")
def demo(buyers: int, tickets: int, hold_seconds: int) -> None:
    """Start the stack, run a small flash sale, let holds expire, print what happened."""
    from ticketing.demo import run_demo

    sys.exit(run_demo(buyers=buyers, tickets=tickets, hold_seconds=hold_seconds))


main.add_command(mail_group)
main.add_command(dlq_group)
main.add_command(search_group)
main.add_command(payments_group)
main.add_command(checkin)
main.add_command(events_group)
main.add_command(orders_group)

if __name__ == "__main__":
    main()
