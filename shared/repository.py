"""The base of a service's repositories: SQL over the connection of the unit of work they are bound to
(``shared.uow``), one statement per call, its result read in the one way the caller wants."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from sqlalchemy import Row, text
from sqlalchemy.ext.asyncio import AsyncConnection

Params = Mapping[str, Any]


class Repository:
    def __init__(self, conn: AsyncConnection) -> None:
        self.conn = conn

    async def execute(self, sql: str, params: Params) -> None:
        """Run a statement whose result nobody reads."""
        await self.conn.execute(text(sql), params)

    async def first(self, sql: str, params: Params) -> Row[Any] | None:
        """The first row, or None when there is none."""
        return (await self.conn.execute(text(sql), params)).first()

    async def one(self, sql: str, params: Params) -> Row[Any]:
        """The one row; no row, or more than one, is an error."""
        return (await self.conn.execute(text(sql), params)).one()

    async def scalar(self, sql: str, params: Params) -> Any:
        """The first column of the one row, or None when there is none; more than one row is an error (unlike
        SQLAlchemy's ``Result.scalar``, which would take the first)."""
        return (await self.conn.execute(text(sql), params)).scalar_one_or_none()

    async def all(self, sql: str, params: Params) -> Sequence[Row[Any]]:
        return (await self.conn.execute(text(sql), params)).all()
