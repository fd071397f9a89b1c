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
