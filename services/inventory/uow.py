"""Inventory's unit of work: one transaction on the ``inventory`` schema, its repositories and its outbox."""

from __future__ import annotations

from sqlalchemy.ext.asyncio import AsyncConnection

from services.inventory.store import Orders, Stock
from shared.uow import UnitOfWork


class InventoryUnitOfWork(UnitOfWork):
    orders: Orders
    stock: Stock

    def bind(self, conn: AsyncConnection) -> None:
        self.orders = Orders(conn)
        self.stock = Stock(conn)
