"""Render an EmailSpec into a MIME message: text and HTML alternatives, one inline QR image per ticket."""

from __future__ import annotations

import io
from email.headerregistry import Address
from email.message import EmailMessage
from email.utils import formatdate
from functools import lru_cache
from pathlib import Path

import jinja2
import segno

from services.mailer.domain import EmailSpec, InvalidEmailData, subject

TEMPLATES = Path(__file__).resolve().parent / "templates"


@lru_cache(maxsize=1)
def environment() -> jinja2.Environment:
    return jinja2.Environment(
        loader=jinja2.FileSystemLoader(TEMPLATES),
        autoescape=jinja2.select_autoescape(["html"]),
        undefined=jinja2.StrictUndefined,  # a missing field is a data error, not a silently blank email
        trim_blocks=True,
        lstrip_blocks=True,
    )


def qr_png(code: str) -> bytes:
    buf = io.BytesIO()
    segno.make(code, error="m").save(buf, kind="png", scale=5, border=2)
    return buf.getvalue()


def render(spec: EmailSpec, sender: str) -> EmailMessage:
    """Raises InvalidEmailData for anything a retry cannot fix (template or data errors)."""
    env = environment()
    title = subject(spec)
    context = {**spec.context, "subject": title, "locale": spec.locale}
    name = f"{spec.kind.value}.{spec.locale}"
    try:
        text = env.get_template(f"{name}.txt").render(context)
        html = env.get_template(f"{name}.html").render(context)
    except jinja2.TemplateError as exc:
        raise InvalidEmailData(f"template {name}: {type(exc).__name__}: {exc}") from exc

    msg = EmailMessage()
    try:
        msg["Subject"] = title
        msg["From"] = sender
        msg["To"] = Address(addr_spec=spec.recipient)
    except (ValueError, IndexError) as exc:  # a retry cannot fix a header: permanent, to the DLQ with the reason
        raise InvalidEmailData(f"headers: {exc}") from exc
    msg["Message-ID"] = spec.email_message_id
    msg["Date"] = formatdate(localtime=False)
    msg["Content-Language"] = spec.locale
    msg.set_content(text)
    msg.add_alternative(html, subtype="html")
    html_part = msg.get_payload()[1]  # type: ignore[index]
    assert isinstance(html_part, EmailMessage)
    for ticket in spec.context.get("tickets", []):
        # multipart/related next to the HTML, so `cid:` references resolve in every mail client.
        html_part.add_related(
            qr_png(ticket["code"]),
            "image",
            "png",
            cid=f"<{ticket['cid']}>",
            filename=f"{ticket['code']}.png",
            disposition="inline",
        )
    return msg
