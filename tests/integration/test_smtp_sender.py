"""The SMTP sender against real aiosmtpd servers: credentials, refused logins, a closed port, the sink."""

from __future__ import annotations

from typing import Any

import aiosmtplib
import pytest
from aiosmtpd.controller import Controller
from aiosmtpd.smtp import AuthResult, LoginPassword

from services.mailer import domain
from services.mailer.domain import Classification
from services.mailer.render import render
from services.mailer.sender import SmtpConfig, SmtpSender
from services.mailer.sink import list_mail, start_sink
from shared.settings import Settings
from tests.harness import free_port
from tests.mailer_support import paid_order
from tests.smtp_server import ScriptedHandler


def _authenticator(server: Any, session: Any, envelope: Any, mechanism: str, auth_data: Any) -> AuthResult:
    ok = isinstance(auth_data, LoginPassword) and auth_data.login == b"mailer" and auth_data.password == b"s3cret"
    return AuthResult(success=ok, handled=False)


def _config(port: int, password: str) -> SmtpConfig:
    return SmtpConfig(
        host="127.0.0.1",
        port=port,
        tls="none",
        username="mailer",
        password=password,
        timeout=5,
        sender="Ticketing <tickets@example.com>",
    )


async def test_credentials_are_used_and_a_refused_login_is_permanent() -> None:
    handler = ScriptedHandler()
    port = free_port()
    controller = Controller(
        handler, hostname="127.0.0.1", port=port, authenticator=_authenticator, auth_require_tls=False
    )
    controller.start()
    try:
        spec = domain.for_paid(paid_order("buyer@example.com"))
        message = render(spec, "tickets@example.com")
        reply = await SmtpSender(_config(port, "s3cret")).send(message, spec.recipient)
        assert "OK queued" in reply  # the text of the server's 250 answer to DATA
        assert len(handler.to("buyer@example.com")) == 1
        with pytest.raises(aiosmtplib.SMTPAuthenticationError) as refused:
            await SmtpSender(_config(port, "wrong")).send(render(spec, "tickets@example.com"), spec.recipient)
        assert domain.classify(refused.value) is Classification.PERMANENT
    finally:
        controller.stop()


async def test_a_closed_port_is_transient() -> None:
    spec = domain.for_paid(paid_order("buyer@example.com"))
    with pytest.raises(aiosmtplib.SMTPException) as down:
        await SmtpSender(_config(free_port(), "")).send(render(spec, "t@example.com"), spec.recipient)
    assert domain.classify(down.value) is Classification.TRANSIENT


async def test_the_embedded_sink_stores_what_it_receives(tmp_path: Any) -> None:
    settings = Settings.model_validate({"mail_sink_port": free_port(), "mail_sink_dir": str(tmp_path / "mail")})
    sink = start_sink(settings)
    assert sink is not None
    try:
        assert start_sink(settings) is None  # a second mailer on this machine reuses the running sink
        spec = domain.for_paid(paid_order("buyer@example.com", locale="en"))
        sender = SmtpSender(SmtpConfig.from_settings(settings, host="127.0.0.1", port=settings.mail_sink_port))
        await sender.send(render(spec, "t@example.com"), spec.recipient)
    finally:
        sink.stop()
    [stored] = list_mail(tmp_path / "mail")
    assert stored.to == "buyer@example.com" and stored.subject.startswith("Your tickets")
