"""SMTP delivery with aiosmtplib, configured from settings."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from email.message import EmailMessage
from email.utils import parseaddr

import aiosmtplib

from shared.settings import Settings


@dataclass(frozen=True)
class SmtpConfig:
    host: str
    port: int
    tls: str  # none | starttls | tls
    username: str
    password: str
    timeout: float
    sender: str

    @classmethod
    def from_settings(cls, settings: Settings, host: str | None = None, port: int | None = None) -> SmtpConfig:
        return cls(
            host=host or settings.smtp_host,
            port=port or settings.smtp_port,
            tls="none" if host else settings.smtp_tls,  # an explicit host/port here is the local sink
            username=settings.smtp_username,
            password=settings.smtp_password.get_secret_value(),
            timeout=settings.smtp_timeout_seconds,
            sender=settings.smtp_sender,
        )

    @property
    def envelope_sender(self) -> str:
        return parseaddr(self.sender)[1] or self.sender


class SmtpSender:
    def __init__(self, config: SmtpConfig) -> None:
        self.config = config

    async def send(self, message: EmailMessage, recipient: str) -> str:
        """Deliver one message; return the server's answer to DATA. Raises aiosmtplib errors as they are."""
        c = self.config
        # One deadline for the whole conversation (aiosmtplib's timeout is per command): the claim lease,
        # which must outlast a send (a settings rule), then really does, and no second worker sends the same
        # email while the first is still talking to the server.
        async with asyncio.timeout(c.timeout):
            return await self._send(message, recipient)

    async def _send(self, message: EmailMessage, recipient: str) -> str:
        c = self.config
        responses, data_reply = await aiosmtplib.send(
            message,
            sender=c.envelope_sender,
            recipients=[recipient],
            hostname=c.host,
            port=c.port,
            username=c.username or None,
            password=c.password or None,
            use_tls=c.tls == "tls",
            start_tls=c.tls == "starttls",
            timeout=c.timeout,
        )
        refused = {rcpt: r for rcpt, r in responses.items() if r.code >= 400}
        if refused:  # aiosmtplib raises only when every recipient is refused; we have one, but be explicit
            raise aiosmtplib.SMTPRecipientsRefused(
                [aiosmtplib.SMTPRecipientRefused(r.code, r.message, rcpt) for rcpt, r in refused.items()]
            )
        return data_reply
