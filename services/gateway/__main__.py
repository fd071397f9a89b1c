import uvicorn

from services.gateway.app import create_app
from shared.settings import get_settings

if __name__ == "__main__":
    settings = get_settings()
    uvicorn.run(create_app(settings), host=settings.gateway_host, port=settings.gateway_port,
                # Logging stays as shared.logs configured it (JSON when asked); the gateway's own access log
                # (services/gateway/observability.py) replaces uvicorn's, which has no correlation id.
                log_level="warning", access_log=False, log_config=None,
                # Longer than the usual client/load-balancer idle timeout, so the server is not the side that
                # closes an idle keep-alive connection while a request is being sent on it.
                timeout_keep_alive=75)
