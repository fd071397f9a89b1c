"""Jinja2 templates of the console (autoescaped) and the helpers its pages share."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from fastapi import Request
from fastapi.responses import HTMLResponse
from fastapi.templating import Jinja2Templates

from services.gateway.problems import Problem

HERE = Path(__file__).parent
STATIC_DIR = HERE / "static"
templates = Jinja2Templates(directory=str(HERE / "templates"))


def _age(seconds: Any) -> str:
    if seconds is None:
        return "-"
    s = int(float(seconds))
    if s < 60:
        return f"{s}s"
    if s < 3600:
        return f"{s // 60}m {s % 60}s"
    if s < 86_400:
        return f"{s // 3600}h {s % 3600 // 60}m"
    return f"{s // 86_400}d {s % 86_400 // 3600}h"


def _pretty(value: Any) -> str:
    return json.dumps(value, indent=2, ensure_ascii=False, default=str, sort_keys=True)


# Console pages show operational data and carry action buttons: never cached, never framed (clickjacking), scripts
# and forms only from the gateway itself (htmx needs no eval; the layout's small <style> is inline).
HEADERS = {
    "Cache-Control": "no-store",
    "X-Frame-Options": "DENY",
    "Referrer-Policy": "same-origin",
    "X-Content-Type-Options": "nosniff",
    "Content-Security-Policy": (
        "default-src 'self'; script-src 'self'; style-src 'self' 'unsafe-inline'; img-src 'self' data:; "
        "frame-ancestors 'none'; form-action 'self'; base-uri 'none'; object-src 'none'"
    ),
}

templates.env.filters["age"] = _age
templates.env.filters["pretty"] = _pretty


def is_htmx(request: Request) -> bool:
    return request.headers.get("hx-request") == "true"


def render(request: Request, name: str, status_code: int = 200, **context: Any) -> HTMLResponse:
    """A page or fragment; pages get the session's CSRF token and user for the layout."""
    context.setdefault("csrf", getattr(request.state, "csrf", ""))
    context.setdefault("user", getattr(request.state, "user", None))
    return templates.TemplateResponse(request, name, context, status_code=status_code, headers=HEADERS)


def problem_fragment(request: Request, problem: Problem) -> HTMLResponse:
    """A refusal of the shared admin code path (the API answers it as problem+json), as a console message."""
    return render(request, "_message.html", problem.status, kind="error", title=problem.title, text=problem.detail)
