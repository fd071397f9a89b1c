"""Database engine helpers (SQLAlchemy 2 async on asyncpg)."""

from __future__ import annotations

from sqlalchemy.ext.asyncio import AsyncEngine, create_async_engine


def make_engine(url: str, pool_size: int = 10) -> AsyncEngine:
    return create_async_engine(
        url,
        pool_size=pool_size,
        max_overflow=pool_size,
        pool_pre_ping=True,
        # Our statements are few and parameterised; asyncpg's statement cache keeps them prepared.
        connect_args={"server_settings": {"application_name": "ticketing"}},
    )


async def create_database_if_missing(url: str) -> bool:
    """Create the database named in ``url`` when it does not exist yet (a fresh machine). True if created."""
    import asyncpg
    from sqlalchemy.engine import make_url

    target = make_url(url)
    dsn = target.set(drivername="postgresql", database="postgres").render_as_string(hide_password=False)
    conn = await asyncpg.connect(dsn)
    try:
        exists = await conn.fetchval("SELECT 1 FROM pg_database WHERE datname = $1", target.database)
        if exists:
            return False
        await conn.execute(f'CREATE DATABASE "{target.database}"')
        return True
    finally:
        await conn.close()


async def drop_database(url: str) -> None:
    import asyncpg
    from sqlalchemy.engine import make_url

    target = make_url(url)
    dsn = target.set(drivername="postgresql", database="postgres").render_as_string(hide_password=False)
    conn = await asyncpg.connect(dsn)
    try:
        await conn.execute(f'DROP DATABASE IF EXISTS "{target.database}" WITH (FORCE)')
    finally:
        await conn.close()
