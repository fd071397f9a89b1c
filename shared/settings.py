"""Settings for every service: environment variables named TICKETING_*, localhost defaults."""

from __future__ import annotations

from functools import lru_cache

from pydantic import Field, SecretStr, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="TICKETING_", env_file=".env", extra="ignore")

    environment: str = Field("development", description="development | test | production")

    database_url: str = "postgresql+asyncpg://postgres@127.0.0.1:5432/ticketing"
    rabbitmq_url: str = "amqp://guest:guest@127.0.0.1:5672/"
    redis_url: str = "redis://127.0.0.1:6379/0"
    prefix: str = Field("", description="Prefix for every queue, exchange and Redis key")

    jwt_secret: SecretStr = SecretStr("dev-only-change-me-0123456789abcdef")
    jwt_issuer: str = "ticketing"

    gateway_host: str = "127.0.0.1"
    gateway_port: int = 8000
    # Health/metrics ports of the consumer services (0 disables the HTTP side of a service).
    inventory_port: int = 8101
    payment_port: int = 8102
    mailer_port: int = 8103
    search_port: int = 8104

    # Checkout
    checkout_wait_seconds: float = Field(5.0, description="How long the gateway waits for a hold decision")
    max_items_per_order: int = 10
    max_quantity_per_order: int = 20
    default_hold_seconds: int = 900
    hold_batch_max: int = Field(256, description="Most checkouts decided in one database transaction")
    hold_method: str = Field("counter", description="counter | order_items (kept for the benchmark)")
    sweeper_interval_seconds: float = 30.0
    checkout_rate_limit: int = Field(30, description="Checkouts per user per rate window (0 = off)")
    checkout_rate_window_seconds: int = 10

    # Messaging
    prefetch: int = 256
    delivery_limit: int = 5
    publish_timeout_seconds: float = 10.0
    outbox_poll_seconds: float = 0.5

    # Search and caching (search service and the gateway's read paths; docs/ARCHITECTURE.md)
    search_check_interval_seconds: float = Field(5.0, description="How often the index is checked for repair")
    search_writethrough_wait_seconds: float = Field(
        2.0, description="How long an admin catalog call waits for the index before answering searchable=false"
    )
    event_cache_ttl_seconds: int = Field(900, description="Event detail cache-aside TTL")
    availability_cache_ttl_seconds: int = Field(10, description="Ticket availability cache TTL")

    # Fault injection, for the crash tests only: the outbox relay exits the process after the commit and
    # before the publish. Refused outside development and test (see the validator below).
    fault_exit_before_publish: bool = False

    log_level: str = "INFO"
    log_json: bool = False

    @model_validator(mode="after")
    def _no_test_switches_in_production(self) -> Settings:
        if self.environment == "production" and self.fault_exit_before_publish:
            raise ValueError("fault injection cannot be enabled in production")
        if self.environment == "production" and "dev-only" in self.jwt_secret.get_secret_value():
            raise ValueError("set TICKETING_JWT_SECRET in production")
        return self

    @property
    def sync_database_url(self) -> str:
        return self.database_url.replace("+asyncpg", "+psycopg2")


@lru_cache
def get_settings() -> Settings:
    return Settings()
