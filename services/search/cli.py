"""`ticketing search ...`: operate the search index."""

from __future__ import annotations

import asyncio

import click
import redis.asyncio as aioredis
from rich.console import Console
from rich.progress import MofNCompleteColumn, Progress

from services.search import rebuild
from shared.db import make_engine
from shared.search_index import store
from shared.search_index.index import Index
from shared.settings import get_settings
from shared.topology import Names


@click.group()
def search() -> None:
    """Operate the search index (Redis)."""


@search.command()
def reindex() -> None:
    """Rebuild the index from PostgreSQL into new keys, then switch to it (searches keep answering)."""

    async def run() -> rebuild.RebuildReport | None:
        settings = get_settings()
        redis = aioredis.from_url(settings.redis_url)
        engine = make_engine(settings.database_url, pool_size=2)
        try:
            await redis.ping()  # the index's server first: a Redis that is down is the likelier mistake here
            total, _ = await store.catalog_state(engine)
            with Progress(*Progress.get_default_columns(), MofNCompleteColumn(), console=Console(stderr=True)) as bar:
                task = bar.add_task("indexing events", total=total)
                return await rebuild.rebuild(
                    Index(redis, Names(settings.prefix)),
                    engine,
                    reason="manual",
                    progress=lambda read: bar.update(task, completed=read),
                )
        finally:
            await redis.aclose()
            await engine.dispose()

    report = asyncio.run(run())
    if report is None:
        raise click.ClickException("another rebuild is running (lock held); try again when it finishes")
    click.echo(
        f"indexed {report.events} events into generation {report.generation} in {report.seconds:.2f} s "
        f"(caught up {report.caught_up}, dropped {report.dropped_keys} old keys)"
    )
