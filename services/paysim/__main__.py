"""`python -m services.paysim`: the offline VNPAY simulator (development and test only)."""

import uvicorn

from services.paysim.sim import create_app
from shared import logs
from shared.settings import get_settings

if __name__ == "__main__":
    settings = get_settings()
    logs.configure("paysim", settings.log_level, settings.log_json)
    uvicorn.run(
        create_app(settings),
        host=settings.service_host,
        port=settings.paysim_port,
        log_level="warning",
        access_log=False,
        log_config=None,
    )  # log_config=None: keep shared.logs' pipeline
