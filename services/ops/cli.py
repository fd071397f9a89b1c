"""`ticketing dlq ...`: list, group, inspect, replay and purge the dead letters of every service, and see the
background jobs (the console's replays)."""

from __future__ import annotations

import asyncio
import json
import sys
import uuid
from collections.abc import Awaitable, Callable, Coroutine
from typing import Any, TypeVar

import click
from rich.console import Console
from rich.progress import MofNCompleteColumn, Progress
from rich.table import Table

from services.ops import dlq
from shared import dead_letters, ops_jobs
from shared.cli import default_actor
from shared.db import make_engine
from shared.messaging import Bus
from shared.settings import get_settings
from shared.topology import Names

T = TypeVar("T")
console = Console()


def _run(fn: Callable[..., Coroutine[Any, Any, T]], *args: Any) -> T:
    return asyncio.run(fn(*args))


def _emit_json(data: Any) -> None:
    click.echo(json.dumps(data, default=str, indent=2, ensure_ascii=False))


async def _with_engine(action: Callable[[Any], Awaitable[T]]) -> T:
    engine = make_engine(get_settings().database_url, pool_size=2)
    try:
        return await action(engine)
    finally:
        await engine.dispose()


def _selector(ids: tuple[int, ...], group: str | None, everything: bool) -> dead_letters.Selector:
    try:
        return dead_letters.Selector(ids=ids, group=group, everything=everything)
    except ValueError as exc:
        raise click.UsageError(f"{exc} (--id N ..., --group KEY or --all)") from exc


def _check_service(service: str) -> None:
    if service not in dead_letters.dlq_services():
        raise click.BadParameter(f"unknown service {service!r}; one of {', '.join(dead_letters.dlq_services())}")


@click.group("dlq")
def dlq_group() -> None:
    """Dead-letter queues of every service: ls, groups, messages, show, replay, purge, audit, jobs."""


@dlq_group.command("ls")
@click.option("--json", "as_json", is_flag=True)
def ls_cmd(as_json: bool) -> None:
    """Every DLQ with its depth and the age of its oldest message."""

    async def go() -> list[dict[str, Any]]:
        settings = get_settings()
        names = Names(settings.prefix)
        bus = Bus(settings, "ops-cli")
        await bus.start(once=True)
        try:
            depths = await dead_letters.broker_depths(bus.admin_channel, names, dead_letters.dlq_services())
        finally:
            await bus.stop()

        async def q(engine: Any) -> list[dict[str, Any]]:
            async with engine.connect() as conn:
                return await dead_letters.overview(conn, depths, names)

        return await _with_engine(q)

    rows = _run(go)
    if as_json:
        _emit_json(rows)
        return
    table = Table("service", "queue", "dead letters", "not yet stored", "oldest age (s)")
    for r in rows:
        age = "" if r["oldest_age_seconds"] is None else f"{r['oldest_age_seconds']:.0f}"
        table.add_row(
            r["service"], r["queue"], str(r["depth"]), str(r["in_broker"] if r["in_broker"] is not None else "-"), age
        )
    console.print(table)


@dlq_group.command("groups")
@click.argument("service", required=False)
@click.option("--json", "as_json", is_flag=True)
def groups_cmd(service: str | None, as_json: bool) -> None:
    """Waiting dead letters grouped by service, exception type, routing and reason."""

    async def q(engine: Any) -> list[dict[str, Any]]:
        async with engine.connect() as conn:
            return await dead_letters.groups(conn, service)

    rows = _run(_with_engine, q)
    if as_json:
        _emit_json(rows)
        return
    table = Table("group", "service", "count", "exception", "routing key", "last failed", "reason")
    for r in rows:
        table.add_row(
            r["group_key"],
            r["service"],
            str(r["count"]),
            r["exception_type"],
            r["routing_key"],
            str(r["last_failed_at"])[:19],
            (r["sample_reason"] or "")[:80],
        )
    console.print(table)


@dlq_group.command("messages")
@click.argument("service", required=False)
@click.option("--group", default=None, help="Only this group (see `dlq groups`).")
@click.option("--status", default="dead", type=click.Choice(["dead", "replayed", "purged"]), show_default=True)
@click.option("--limit", default=100, show_default=True)
@click.option("--json", "as_json", is_flag=True)
def messages_cmd(service: str | None, group: str | None, status: str, limit: int, as_json: bool) -> None:
    """Dead letters, one line each."""

    async def q(engine: Any) -> list[dict[str, Any]]:
        async with engine.connect() as conn:
            return await dead_letters.messages(conn, service, group, status, limit)

    rows = _run(_with_engine, q)
    if as_json:
        _emit_json(rows)
        return
    table = Table("id", "service", "message id", "routing key", "exception", "attempts", "replays", "reason")
    for r in rows:
        table.add_row(
            str(r["id"]),
            r["service"],
            r["message_id"][:40],
            r["routing_key"],
            r["exception_type"],
            str(r["attempts"]),
            str(r["replay_count"]),
            r["reason"][:80],
        )
    console.print(table)


@dlq_group.command("show")
@click.argument("dead_letter_id", type=int)
def show_cmd(dead_letter_id: int) -> None:
    """One dead letter: headers, body, death history and earlier deaths of the same message."""

    async def q(engine: Any) -> dict[str, Any] | None:
        async with engine.connect() as conn:
            return await dead_letters.get(conn, dead_letter_id)

    row = _run(_with_engine, q)
    if row is None:
        raise click.ClickException(f"no dead letter {dead_letter_id}")
    _emit_json(row)


def _selection_options(fn: Callable[..., Any]) -> Callable[..., Any]:
    fn = click.option("--actor", default=default_actor, show_default="user@host", help="Recorded in the audit log.")(fn)
    fn = click.option("--dry-run", is_flag=True, help="Show what would happen; change nothing (still audited).")(fn)
    fn = click.option("--all", "everything", is_flag=True, help="Every waiting dead letter of the service.")(fn)
    fn = click.option("--group", default=None, help="A group key from `dlq groups`.")(fn)
    fn = click.option("--id", "ids", type=int, multiple=True, help="A dead letter id (repeatable).")(fn)
    fn = click.option("--json", "as_json", is_flag=True)(fn)
    return fn


def _report(result: dlq.ActionResult, as_json: bool) -> None:
    if as_json:
        _emit_json(result.__dict__)
    else:
        verb = {"replay": "replayed", "purge": "purged"}[result.action]
        prefix = "dry run: would have " if result.dry_run else ""
        click.echo(
            f"{prefix}{verb} {result.matched if result.dry_run else result.affected} of {result.matched} "
            f"matching dead letters of {result.service} (audit #{result.audit_id})"
        )
        for s in result.sample:
            click.echo(f"  #{s['id']} {s['routing_key']} {s['exception_type']}: {s['reason'][:100]}")
    if result.error:
        click.echo(f"error: {result.error}", err=True)
        sys.exit(1)


@dlq_group.command("replay")
@click.argument("service")
@_selection_options
@click.option("--rate", type=float, default=None, help="Messages per second (default: the setting, 50).")
def replay_cmd(
    service: str,
    ids: tuple[int, ...],
    group: str | None,
    everything: bool,
    dry_run: bool,
    actor: str,
    as_json: bool,
    rate: float | None,
) -> None:
    """Send dead letters back to the queue they came from (with confirms, rate-limited)."""
    _check_service(service)
    sel = _selector(ids, group, everything)
    settings = get_settings()

    async def go(engine: Any) -> dlq.ActionResult:
        bus = Bus(settings, "ops-cli")
        await bus.start(once=True)
        try:

            async def publish(
                body: bytes, queue: str, message_id: str, headers: dict[str, Any], correlation_id: str | None
            ) -> None:
                await bus.publish_raw(
                    body, queue, exchange="", message_id=message_id, headers=headers, correlation_id=correlation_id
                )

            # On stderr, so `--json` output stays parseable; a replay at the default rate can take minutes.
            with Progress(
                *Progress.get_default_columns(),
                MofNCompleteColumn(),
                console=Console(stderr=True),
                disable=as_json or dry_run,
                transient=False,
            ) as bar:
                task = bar.add_task(f"replaying {service}", total=None)

                def advance(done: int, matched: int) -> None:
                    bar.update(task, completed=done, total=matched)

                try:
                    return await dlq.replay(
                        engine,
                        publish,
                        service,
                        sel,
                        actor,
                        dry_run=dry_run,
                        rate=settings.dlq_replay_rate if rate is None else rate,
                        progress=advance,
                    )
                except dlq.ReplayInProgress as exc:
                    raise click.ClickException(str(exc)) from exc
        finally:
            await bus.stop()

    _report(_run(_with_engine, go), as_json)


@dlq_group.command("purge")
@click.argument("service")
@_selection_options
@click.option("--yes", is_flag=True, help="Do not ask for confirmation.")
def purge_cmd(
    service: str,
    ids: tuple[int, ...],
    group: str | None,
    everything: bool,
    dry_run: bool,
    actor: str,
    as_json: bool,
    yes: bool,
) -> None:
    """Discard dead letters (kept as purged rows for the audit trail; never replayed)."""
    _check_service(service)
    sel = _selector(ids, group, everything)

    async def preview(engine: Any) -> int:
        async with engine.connect() as conn:
            return (await dlq.count(conn, service, sel))[0]

    if not dry_run and not yes:
        matched = _run(_with_engine, preview)
        click.confirm(f"Purge {matched} dead letters of {service}? This cannot be replayed", abort=True)

    async def go(engine: Any) -> dlq.ActionResult:
        return await dlq.purge(engine, service, sel, actor, dry_run=dry_run)

    _report(_run(_with_engine, go), as_json)


@dlq_group.command("audit")
@click.option("--limit", default=50, show_default=True)
@click.option("--json", "as_json", is_flag=True)
def audit_cmd(limit: int, as_json: bool) -> None:
    """Who replayed or purged what, when, and how many."""

    async def q(engine: Any) -> list[dict[str, Any]]:
        async with engine.connect() as conn:
            return await dead_letters.audit_log(conn, limit)

    rows = _run(_with_engine, q)
    if as_json:
        _emit_json(rows)
        return
    table = Table("id", "at", "actor", "action", "service", "selector", "dry run", "matched", "affected")
    for r in rows:
        table.add_row(
            str(r["id"]),
            str(r["at"])[:19],
            r["actor"],
            r["action"],
            r["service"],
            json.dumps(r["selector"]),
            "yes" if r["dry_run"] else "",
            str(r["matched"]),
            str(r["affected"]),
        )
    console.print(table)


@dlq_group.command("jobs")
@click.argument("job_id", required=False, type=click.UUID)
@click.option("--limit", default=20, show_default=True)
@click.option("--json", "as_json", is_flag=True)
def jobs_cmd(job_id: uuid.UUID | None, limit: int, as_json: bool) -> None:
    """Background jobs (replays started from the console or POST /admin/jobs): the latest, or one (as JSON)."""

    async def q(engine: Any) -> Any:
        async with engine.connect() as conn:
            return await ops_jobs.get(conn, job_id) if job_id else await ops_jobs.recent(conn, limit)

    found = _run(_with_engine, q)
    if job_id is not None:
        if found is None:
            raise click.ClickException(f"no job {job_id}")
        _emit_json(found)
        return
    if as_json:
        _emit_json(found)
        return
    table = Table("job", "kind", "service", "status", "done / total", "replayed", "actor", "queued")
    for j in found:
        total = "?" if j["total"] is None else str(j["total"])
        table.add_row(
            str(j["id"]),
            j["kind"],
            j["params"].get("service", ""),
            j["status"],
            f"{j['done']} / {total}",
            str(j["affected"]),
            j["actor"],
            str(j["created_at"])[:19],
        )
    console.print(table)
