"""`ticketing mail ls|show`: the messages the embedded SMTP sink received (development, no SMTP configured)."""

from __future__ import annotations

import json

import click
from rich.console import Console
from rich.table import Table

from services.mailer.sink import list_mail, sink_dir
from shared.settings import get_settings


@click.group("mail")
def mail_group() -> None:
    """Email caught by the local SMTP sink (when TICKETING_SMTP_HOST is not set)."""


@mail_group.command("ls")
@click.option("--limit", default=50, show_default=True, help="The most recent N messages.")
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
def ls_cmd(limit: int, as_json: bool) -> None:
    """List received messages, oldest first (the number is what `mail show` takes)."""
    path = sink_dir(get_settings())
    mails = list_mail(path)
    start = max(0, len(mails) - limit)
    rows = [
        {
            "number": i,
            "received": m.received.isoformat(),
            "to": m.to,
            "subject": m.subject,
            "attachments": sum(1 for p in m.message.walk() if p.get_content_maintype() == "image"),
        }
        for i, m in enumerate(mails[start:], start=start + 1)
    ]
    if as_json:
        click.echo(json.dumps(rows, indent=2, ensure_ascii=False))
        return
    if not mails:
        click.echo(f"no mail in {path}")
        return
    table = Table("#", "received (UTC)", "to", "subject", "attachments")
    for r, m in zip(rows, mails[start:], strict=True):
        table.add_row(
            str(r["number"]), m.received.strftime("%Y-%m-%d %H:%M:%S"), m.to, m.subject, str(r["attachments"])
        )
    Console().print(table)


@mail_group.command("show")
@click.argument("number", type=int, default=-1)
@click.option("--html", "part", flag_value="html", help="Print the HTML part.")
@click.option("--text", "part", flag_value="plain", default=True, help="Print the plain-text part (default).")
@click.option("--raw", "part", flag_value="raw", help="Print the whole MIME message.")
def show_cmd(number: int, part: str) -> None:
    """Show message NUMBER from `mail ls` (default: the latest)."""
    mails = list_mail(sink_dir(get_settings()))
    if not mails:
        raise click.ClickException("no mail yet")
    try:
        mail = mails[number - 1] if number > 0 else mails[number]
    except IndexError as exc:
        raise click.ClickException(f"no message #{number} (there are {len(mails)})") from exc
    msg = mail.message
    if part == "raw":
        click.echo(msg.as_string())
        return
    for header in ("From", "To", "Subject", "Date", "Message-ID"):
        click.echo(f"{header}: {msg.get(header, '')}")
    images = [p.get("Content-ID", "") for p in msg.walk() if p.get_content_maintype() == "image"]
    if images:
        click.echo(f"Inline images: {', '.join(images)}")
    click.echo("")
    body = msg.get_body(preferencelist=(part,))
    click.echo(body.get_content() if body is not None else f"(no {part} part)")
