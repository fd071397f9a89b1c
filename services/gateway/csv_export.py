"""CSV for accounting: UTF-8 (with a byte-order mark, so spreadsheet programs read Vietnamese names right),
one header row, and no cell a spreadsheet would run as a formula."""

from __future__ import annotations

import csv
import io
from collections.abc import AsyncIterator, Iterable, Sequence
from datetime import datetime
from typing import Any

BOM = "\ufeff"
# A cell starting with one of these is a formula to Excel, LibreOffice and Google Sheets (CSV injection).
FORMULA_STARTS = ("=", "+", "-", "@", "\t", "\r")


def cell(value: Any) -> str:
    """A value as CSV text; text that a spreadsheet would evaluate is prefixed with an apostrophe."""
    if value is None:
        return ""
    if isinstance(value, datetime):
        return value.isoformat()
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return str(value)
    text = str(value)
    return "'" + text if text.startswith(FORMULA_STARTS) else text


def line(values: Sequence[Any]) -> str:
    out = io.StringIO()
    csv.writer(out, lineterminator="\r\n").writerow([cell(v) for v in values])
    return out.getvalue()


async def stream(header: Iterable[str], rows: AsyncIterator[Sequence[Any]], every: int = 500) -> AsyncIterator[bytes]:
    """The CSV in chunks of ``every`` rows: the header first (with the BOM), then the rows as they come."""
    yield (BOM + line(list(header))).encode()
    chunk: list[str] = []
    async for row in rows:
        chunk.append(line(row))
        if len(chunk) >= every:
            yield "".join(chunk).encode()
            chunk = []
    if chunk:
        yield "".join(chunk).encode()
