"""The read-only views (schema ``read_api``) that other services may read; inventory owns the tables."""

from __future__ import annotations

from typing import Any

from shared.messages import OrderStatus, OrderView, PricedLine

ORDER_COLUMNS = "id, user_id, status, total, items, expires_at, reason, detail, created_at, request_hash"


def order_view(row: Any) -> OrderView:
    return OrderView(
        order_id=row.id,
        user_id=row.user_id,
        status=OrderStatus(row.status),
        total=row.total,
        items=[PricedLine(**i) for i in row.items],
        expires_at=row.expires_at,
        reason=row.reason,
        detail=row.detail,
        created_at=row.created_at,
    )
