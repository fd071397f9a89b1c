"""The embedded SMTP sink for development: aiosmtpd storing every message in a Maildir.

Started by the mailer when TICKETING_SMTP_HOST is empty; `ticketing mail ls|show` reads the same Maildir.
"""

from __future__ import annotations

import errno
import mailbox
from dataclasses import dataclass
from datetime import UTC, datetime
from email import policy
from email.message import EmailMessage
from email.parser import BytesParser
from pathlib import Path

from aiosmtpd.controller import Controller
from aiosmtpd.handlers import Mailbox

from shared import logs
from shared.settings import Settings

log = logs.get_logger(__name__)


def sink_dir(settings: Settings) -> Path:
    return Path(settings.mail_sink_dir).expanduser().resolve()


def start_sink(settings: Settings) -> Controller | None:
    """Start the sink on 127.0.0.1:mail_sink_port; None if another process (a second mailer) already serves it."""
    path = sink_dir(settings)
    path.parent.mkdir(parents=True, exist_ok=True)
    # A generous ready timeout: on a busy machine the sink's thread may take seconds to come up.
    controller = Controller(Mailbox(path), hostname="127.0.0.1", port=settings.mail_sink_port, ready_timeout=30)
    try:
        controller.start()
    except OSError as exc:
        if exc.errno != errno.EADDRINUSE:
            raise
        # Port taken: most likely the sink of another mailer process on this machine; send there.
        log.warning("mail_sink_port_in_use", port=settings.mail_sink_port)
        return None
    log.info("mail_sink_started", port=settings.mail_sink_port, directory=str(path))
    return controller


@dataclass(frozen=True)
class StoredMail:
    key: str
    received: datetime
    message: EmailMessage

    @property
    def subject(self) -> str:
        return str(self.message.get("Subject", ""))

    @property
    def to(self) -> str:
        return str(self.message.get("To", ""))


def list_mail(path: Path) -> list[StoredMail]:
    """Every stored message, oldest first (Maildir keeps the delivery time as the file's mtime)."""
    if not path.exists():
        return []
    box = mailbox.Maildir(str(path), create=False)
    parser = BytesParser(policy=policy.default)
    out = []
    for key in box.iterkeys():
        received = datetime.fromtimestamp(box.get_message(key).get_date(), UTC)
        msg = parser.parsebytes(box.get_bytes(key))
        out.append(StoredMail(key, received, msg))  # type: ignore[arg-type]
    return sorted(out, key=lambda m: (m.received, m.key))
