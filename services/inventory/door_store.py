"""SQL of the door: a presented ticket read under its order's row lock, and its one admission. The repository
runs inside the unit of work's transaction.

Lock order (as everywhere in inventory, see ``sales.py``): the order row first. A check-in takes it FOR SHARE
(concurrent check-ins of one order do not wait for one another); a refund or a cancellation takes it FOR UPDATE,
so the two serialize on that row: a check-in decided before the refund committed admits, one after it sees the
order's new status and answers ``void``. Two scans of one code serialize on the ticket's row in the admitting
UPDATE: the second finds ``admitted_at`` set and admits nothing.
"""

from __future__ import annotations

from datetime import datetime

from services.inventory.domain import TicketAtDoor
from shared.messages import OrderStatus
from shared.repository import Repository


class Door(Repository):
    async def presented(self, code: str) -> TicketAtDoor | None:
        """The ticket with this code and its order's status, the order's row locked FOR SHARE first."""
        order = await self.first(
            "SELECT o.status FROM inventory.orders o "
            "WHERE o.id = (SELECT order_id FROM inventory.tickets WHERE code = :code) FOR SHARE OF o",
            {"code": code},
        )
        if order is None:
            return None
        row = await self.one(
            "SELECT t.id, t.ticket_type_id, tt.event_id, t.admitted_at FROM inventory.tickets t "
            "JOIN inventory.ticket_types tt ON tt.id = t.ticket_type_id WHERE t.code = :code",
            {"code": code},
        )
        return TicketAtDoor(
            ticket_id=row.id,
            ticket_type_id=row.ticket_type_id,
            event_id=row.event_id,
            order_status=OrderStatus(order.status),
            admitted_at=row.admitted_at,
        )

    async def admit(self, code: str, actor: str) -> datetime | None:
        """Admit the ticket if nobody has: its admission time, or None when another scan admitted it first."""
        return await self.scalar(
            "UPDATE inventory.tickets SET admitted_at = now(), admitted_by = :actor "
            "WHERE code = :code AND admitted_at IS NULL RETURNING admitted_at",
            {"code": code, "actor": actor},
        )

    async def admitted_at(self, code: str) -> datetime | None:
        """The ticket's (first) admission, as committed now."""
        return await self.scalar("SELECT admitted_at FROM inventory.tickets WHERE code = :code", {"code": code})
