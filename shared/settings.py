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

    # Fault injection, for the crash tests only: the outbox relay exits the process after the commit and
    # before the publish. Refused outside development and test (see the validator below).
    fault_exit_before_publish: bool = False

    # --- Mailer (issue 4) -----------------------------------------------------------------------------
    # No SMTP host: the mailer starts an embedded SMTP sink (aiosmtpd) that stores each message in
    # mail_sink_dir (a Maildir), so `ticketing mail ls` shows what was sent. Refused in production.
    smtp_host: str = ""
    smtp_port: int = 587
    smtp_tls: str = Field(default="starttls", description="none | starttls | tls (implicit TLS, usually port 465)")
    smtp_username: str = ""
    smtp_password: SecretStr = SecretStr("")
    smtp_timeout_seconds: float = 30.0
    smtp_sender: str = "Ticketing <tickets@ticketing.local>"
    mail_sink_port: int = 8025
    mail_sink_dir: str = "var/mail"
    mailer_retry_delays: tuple[int, ...] = Field(default=(5, 30, 120, 600), description="Retry ladder, seconds")
    mailer_claim_lease_seconds: float = Field(
        default=120.0, description="How long an in-flight send blocks a duplicate (longer than an SMTP timeout)"
    )
    mailer_prefetch: int = 16
    # --- Dead-letter operations (issue 4) ---------------------------------------------------------------
    ops_port: int = 8105
    dlq_replay_rate: float = Field(default=50.0, description="Default replay rate, messages per second")

    log_level: str = "INFO"
    log_json: bool = False

    @model_validator(mode="after")
    def _no_test_switches_in_production(self) -> Settings:
        if self.environment == "production" and self.fault_exit_before_publish:
            raise ValueError("fault injection cannot be enabled in production")
        if self.environment == "production" and "dev-only" in self.jwt_secret.get_secret_value():
            raise ValueError("set TICKETING_JWT_SECRET in production")
        if self.environment == "production" and not self.smtp_host:
            raise ValueError("set TICKETING_SMTP_HOST in production (the embedded mail sink is for development)")
        return self


@lru_cache
def get_settings() -> Settings:
    return Settings()
