"""Drive the payment simulator like a buyer's browser (for the demo and the tests)."""

from __future__ import annotations

from urllib.parse import urlsplit

import httpx

from services.paysim.sim import CONFIRM_PATH


async def pay_with_simulator(payment_url: str, approve: bool = True, response_code: str | None = None) -> str:
    """Open the payment page, approve (or decline) the payment, and return the return-URL redirect.

    The simulator then sends the signed IPN to the gateway on its own, as VNPAY does.
    """
    parts = urlsplit(payment_url)
    base = f"{parts.scheme}://{parts.netloc}"
    async with httpx.AsyncClient(timeout=30) as client:
        page = await client.get(payment_url)
        page.raise_for_status()
        form = {"q": parts.query, "action": "approve" if approve else "decline"}
        if response_code:
            form["response_code"] = response_code
        r = await client.post(f"{base}{CONFIRM_PATH}", data=form, follow_redirects=False)
    if r.status_code != 303:
        raise RuntimeError(f"the simulator refused the payment: {r.status_code} {r.text[:200]}")
    return r.headers["location"]
