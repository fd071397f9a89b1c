"""The mailer's record of emails: one row per (order, kind) and per resend of it (``resend_id``), claimed before
sending and marked sent after.

Protocol (see docs/ARCHITECTURE.md, "Email"): claim -> SMTP -> mark sent. A row that is ``sent`` is never sent
again; a row that is ``sending`` under a live lease belongs to another worker; an expired lease (the worker
died) or a ``failed`` row may be claimed again.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass

from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine

from services.mailer.domain import EmailSpec, EmailStatus, email_sources_of


class Claim(enum.StrEnum):
    GRANTED = "granted"
    ALREADY_SENT = "already_sent"
    IN_FLIGHT = "in_flight"  # another worker holds a live lease


@dataclass
class EmailStore:
    engine: AsyncEngine
    lease_seconds: float

    async def claim(self, spec: EmailSpec, message_id: str, subject: str) -> Claim:
        async with self.engine.begin() as conn:
            row = (
                await conn.execute(
                    text("""
                INSERT INTO mailer.emails AS e (order_id, kind, resend_id, status, recipient, locale, subject,
                                                message_id, email_message_id, claimed_at)
                VALUES (CAST(:order_id AS uuid), :kind, :resend_id, 'sending', :recipient, :locale, :subject,
                        :message_id, :email_message_id, now())
                ON CONFLICT (order_id, kind, resend_id) DO UPDATE
                   SET status = 'sending', claimed_at = now(), attempts = e.attempts + 1, updated_at = now(),
                       message_id = EXCLUDED.message_id
                 WHERE e.status = ANY(:reclaimable)
                   AND (e.status <> 'sending' OR e.claimed_at < now() - make_interval(secs => :lease))
                RETURNING e.status
            """),
                    {
                        "order_id": spec.order_id,
                        "kind": spec.kind.value,
                        "resend_id": spec.resend_id,
                        "recipient": spec.recipient,
                        "locale": spec.locale,
                        "subject": subject,
                        "message_id": message_id,
                        "email_message_id": spec.email_message_id,
                        "lease": self.lease_seconds,
                        "reclaimable": email_sources_of(EmailStatus.SENDING),
                    },
                )
            ).first()
            if row is not None:
                return Claim.GRANTED
            status = (
                await conn.execute(
                    text("""
                UPDATE mailer.emails SET duplicates_skipped = duplicates_skipped + 1, updated_at = now()
                 WHERE order_id = CAST(:order_id AS uuid) AND kind = :kind AND resend_id = :resend_id
                   AND status = 'sent'
                RETURNING status
            """),
                    {"order_id": spec.order_id, "kind": spec.kind.value, "resend_id": spec.resend_id},
                )
            ).scalar()
            return Claim.ALREADY_SENT if status == "sent" else Claim.IN_FLIGHT

    async def mark_sent(self, spec: EmailSpec, smtp_response: str) -> None:
        # One autocommitted single-row UPDATE right after the server's 250: the only window for a duplicate.
        await self._move(
            spec,
            EmailStatus.SENT,
            "sent_at = now(), smtp_response = :resp, last_error = NULL",
            resp=smtp_response[:500],
        )

    async def mark_failed(self, spec: EmailSpec, error: str) -> None:
        await self._move(spec, EmailStatus.FAILED, "last_error = :err, claimed_at = NULL", err=error[:2000])

    async def _move(self, spec: EmailSpec, new: EmailStatus, also: str, **values: str) -> None:
        """One email's row to ``new`` (from the statuses the state machine allows), setting ``also`` too."""
        async with self.engine.begin() as conn:
            await conn.execute(
                text(
                    f"UPDATE mailer.emails SET status = :new, {also}, updated_at = now() "
                    "WHERE order_id = CAST(:order_id AS uuid) AND kind = :kind AND resend_id = :resend_id "
                    "AND status = ANY(:from)"
                ),
                {
                    "order_id": spec.order_id,
                    "kind": spec.kind.value,
                    "resend_id": spec.resend_id,
                    "new": new.value,
                    "from": email_sources_of(new),
                    **values,
                },
            )
