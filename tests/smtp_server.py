"""A real SMTP server for the tests (aiosmtpd) whose answers the test controls, per recipient."""

from __future__ import annotations

import threading
from collections import Counter
from dataclasses import dataclass
from email import policy
from email.message import EmailMessage
from email.parser import BytesParser
from typing import Any

from aiosmtpd.controller import Controller


@dataclass(frozen=True)
class Received:
    recipient: str
    message: EmailMessage

    def part(self, subtype: str) -> str:
        body = self.message.get_body(preferencelist=(subtype,))
        assert body is not None, f"no text/{subtype} part"
        return str(body.get_content())  # type: ignore[attr-defined]

    @property
    def images(self) -> list[tuple[str, bytes]]:
        return [
            (str(p.get("Content-ID", "")), p.get_content())  # type: ignore[attr-defined]
            for p in self.message.walk()
            if p.get_content_maintype() == "image"
        ]


class ScriptedHandler:
    """Answers DATA with 250 unless a recipient has a script (next answers) or a standing failure."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.received: list[Received] = []
        self.attempts: Counter[str] = Counter()
        self._scripts: dict[str, list[str]] = {}
        self._standing: dict[str, str] = {}

    def script(self, recipient: str, answers: list[str]) -> None:
        with self._lock:
            self._scripts[recipient] = list(answers)

    def fail_always(self, recipient: str, answer: str) -> None:
        with self._lock:
            self._standing[recipient] = answer

    def fix(self, recipient: str) -> None:
        with self._lock:
            self._standing.pop(recipient, None)
            self._scripts.pop(recipient, None)

    def to(self, recipient: str) -> list[Received]:
        with self._lock:
            return [r for r in self.received if r.recipient == recipient]

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
        recipient = envelope.rcpt_tos[0]
        with self._lock:
            self.attempts[recipient] += 1
            if recipient in self._standing:
                return self._standing[recipient]
            script = self._scripts.get(recipient)
            if script:
                return script.pop(0)
            raw = envelope.original_content or envelope.content
            message = BytesParser(policy=policy.default).parsebytes(raw)
            self.received.append(Received(recipient, message))  # type: ignore[arg-type]
        return "250 2.0.0 OK queued"


class ScriptedSmtpServer:
    def __init__(self, port: int) -> None:
        self.handler = ScriptedHandler()
        self.controller = Controller(self.handler, hostname="127.0.0.1", port=port)

    def start(self) -> None:
        self.controller.start()

    def stop(self) -> None:
        self.controller.stop()
