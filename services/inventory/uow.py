"""Inventory's unit of work: one transaction on the ``inventory`` schema, its repositories and its outbox."""

from __future__ import annotations

from sqlalchemy.ext.asyncio import AsyncConnection

from services.inventory.door_store import Door
from services.inventory.sales_store import Sales
from services.inventory.store import Catalog, Events, Orders, Stock
from shared.uow import UnitOfWork


class InventoryUnitOfWork(UnitOfWork):
    orders: Orders
    stock: Stock
    catalog: Catalog
    sales: Sales
    door: Door
    events: Events

    def bind(self, conn: AsyncConnection) -> None:
        self.orders, self.stock = Orders(conn, self.clock), Stock(conn)
        self.catalog, self.sales = Catalog(conn), Sales(conn)
        self.door = Door(conn)
        self.events = Events(conn)
