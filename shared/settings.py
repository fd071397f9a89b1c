"""Settings for every service: environment variables named TICKETING_*, localhost defaults."""

from __future__ import annotations

import enum
from functools import lru_cache
from typing import Any

from pydantic import Field, SecretStr, ValidationError, field_validator, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict


class Environment(enum.StrEnum):
    """Where the system runs. Only these three exist: a typo must not silently mean "not production"."""

    DEVELOPMENT = "development"
    TEST = "test"
    PRODUCTION = "production"

    @property
    def is_local(self) -> bool:
        """Development and test: the only places published secrets, the simulator and fault injection may run."""
        return self in (Environment.DEVELOPMENT, Environment.TEST)


# Secrets that are in the repository: anyone can read them, so they only ever sign development traffic.
PUBLISHED_SECRETS = frozenset({"dev-only-change-me-0123456789abcdef", "dev-only-vnpay-hash-secret-0123456789"})
MIN_SECRET_BYTES = 32


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="TICKETING_", env_file=".env", extra="ignore")

    environment: Environment = Field(Environment.DEVELOPMENT, description="development | test | production")

    database_url: str = "postgresql+asyncpg://postgres@127.0.0.1:5432/ticketing"
    rabbitmq_url: str = "amqp://guest:guest@127.0.0.1:5672/"
    redis_url: str = "redis://127.0.0.1:6379/0"
    prefix: str = Field("", description="Prefix for every queue, exchange and Redis key")

    jwt_secret: SecretStr = SecretStr("dev-only-change-me-0123456789abcdef")
    jwt_issuer: str = "ticketing"

    gateway_host: str = "127.0.0.1"
    gateway_port: int = 8000
    # Several gateway processes on one port (`ticketing up --scale gateway=N` sets it): SO_REUSEPORT lets the
    # kernel spread connections over them. Off by default, so a second stack started by mistake on a port in
    # use fails to bind instead of silently sharing it.
    gateway_reuse_port: bool = False
    # Where the other services serve /healthz, /readyz and /metrics (and the payment simulator its pages).
    service_host: str = "127.0.0.1"
    # Health/metrics ports of the consumer services (0 disables the HTTP side of a service).
    inventory_port: int = 8101
    payment_port: int = 8102
    mailer_port: int = 8103
    search_port: int = 8104

    # The process
    gc_freeze: bool = Field(
        True,
        description="Freeze the start-up heap out of the garbage collector's walks once a service is up "
        "(shared/heap.py); false only to measure what it buys",
    )

    # Checkout
    checkout_wait_seconds: float = Field(5.0, description="How long the gateway waits for a hold decision")
    sold_out_gate_seconds: float = Field(
        1.0, description="Longest a sold-out ticket type is refused by the gateway itself (0 = no gate)"
    )
    hold_batch_max: int = Field(256, description="Most checkouts decided in one database transaction")
    checkout_batch_max: int = Field(
        64,
        ge=1,
        le=1000,
        description="Most checkouts a gateway sends in one message to inventory (1 = one message per checkout, "
        "as gateways before checkout.batch did: for a rollout that starts with the gateways)",
    )
    sweeper_interval_seconds: float = 30.0
    event_cancel_batch_size: int = Field(200, ge=1, le=5000, description="Orders per transaction of a cancellation")
    event_cancel_pause_seconds: float = Field(
        0.0, ge=0, le=60, description="Pause between a cancellation's batches (leaves the database to other sales)"
    )
    event_cancel_resume_idle_seconds: float = Field(
        30.0, gt=0, description="A cancellation with no batch for this long is resumed (a lost continue message)"
    )
    checkout_rate_limit: int = Field(30, description="Checkouts per user per rate window (0 = off)")
    checkout_rate_window_seconds: int = 10

    # Messaging
    prefetch: int = 256
    delivery_limit: int = 5
    work_queue_max_length: int = Field(
        100_000, ge=0, description="Most messages a work queue holds; beyond, publishes are refused (0 = no bound)"
    )
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

    # --- Payments: VNPAY 2.1.0 and the offline payment simulator ------------------------
    # Empty URLs mean "the local payment simulator" (development and test only; refused in production).
    vnpay_tmn_code: str = "TICKETDV"  # VNPAY terminal id (8 characters)
    vnpay_hash_secret: SecretStr = SecretStr("dev-only-vnpay-hash-secret-0123456789")
    vnpay_pay_url: str = ""  # VNPAY payment page (browser GET); '' = the simulator
    vnpay_api_url: str = ""  # VNPAY merchant API for querydr/refund; '' = the simulator
    vnpay_return_url: str = ""  # Where VNPAY sends the browser back; '' = this gateway
    vnpay_locale: str = "vn"
    vnpay_order_type: str = "other"
    vnpay_server_ip: str = "127.0.0.1"  # Our server's IP, sent in querydr/refund
    vnpay_timeout_seconds: float = 10.0
    # Reconciliation (querydr) of attempts with no IPN: those whose hold ends within the lead time, or ended
    # less than the window ago (VNPAY retries an IPN for about 50 min).
    payment_reconcile_interval_seconds: float = 60.0
    payment_reconcile_lead_seconds: int = 300
    payment_reconcile_window_seconds: int = 3600
    payment_refund_retry_seconds: float = 60.0
    # The simulator: on by default in development/test, never in production (see the validator).
    paysim_enabled: bool | None = None  # None = on in development and test
    paysim_port: int = 8105
    paysim_ipn_url: str = ""  # The IPN URL 'registered' with the simulator; '' = this gateway
    paysim_ipn_retry_seconds: float = 300.0  # VNPAY retries an IPN every 5 min; shorten in dev
    paysim_ipn_max_calls: int = 10

    # --- Mailer -----------------------------------------------------------------------------
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
    # --- Dead-letter operations ---------------------------------------------------------------
    ops_port: int = 8106
    dlq_replay_rate: float = Field(default=50.0, description="Default replay rate, messages per second")
    # A background job (the console's replays) is leased to the ops process running it and renewed after each
    # chunk (a chunk lasts about a third of this); a job whose runner died is resumed once its lease runs out.
    ops_job_lease_seconds: float = Field(default=30.0, gt=0)

    # --- Edge hardening (docs/SECURITY.md has the threat model and why these values) -----
    # Request bodies are counted while they stream in, Content-Length or chunked; above the cap: 413.
    max_body_bytes: int = Field(65_536, description="Largest request body on public routes")
    max_admin_body_bytes: int = Field(1_048_576, description="Largest body on /admin/ routes (authenticated first)")
    jwt_audience: str = Field("", description="Required 'aud' claim of bearer tokens ('' = not checked)")
    jwt_max_lifetime_seconds: int = Field(
        7 * 86_400, description="Tokens whose exp - iat (or exp - now) exceeds this are refused"
    )
    # Per-route rate limits: requests per rate_limit_window_seconds, per client address (anonymous routes) or
    # per token subject (buyer routes); 0 turns one off, rate_limit_enabled=false all of them (the test suite).
    # Checkout keeps its own checkout_rate_limit above.
    rate_limit_enabled: bool = True
    rate_limit_window_seconds: int = 10
    rate_limit_search: int = 100
    rate_limit_catalog: int = 200
    rate_limit_orders: int = 100
    rate_limit_payments: int = Field(1_000, description="IPN and return URL, per source address (VNPAY retries)")
    rate_limit_health: int = 100
    # The search read-through path (index missing, Redis down): searches and homepage pages run at once per
    # gateway process, and how long one waits for a turn before it is shed with 503 + Retry-After.
    search_fallback_concurrency: int = 4
    search_fallback_queue_seconds: float = 1.0
    rate_limit_local_max_keys: int = Field(
        100_000, description="Clients one gateway process tracks itself while Redis is unreachable"
    )

    log_level: str = "INFO"
    log_json: bool = False

    # --- The messaging foundation: every wait on the broker has a deadline --------------------
    broker_connect_timeout_seconds: float = Field(5.0, description="One connect attempt, handshake included")
    broker_operation_timeout_seconds: float = Field(10.0, description="One declare, bind or consumer start")
    broker_retry_initial_seconds: float = Field(0.5, description="First pause before connecting again")
    broker_retry_max_seconds: float = Field(10.0, description="Longest pause between connect attempts (jittered)")
    checkout_retry_after_seconds: int = Field(5, description="Retry-After of a checkout the broker cannot take")

    @field_validator("environment", mode="before")
    @classmethod
    def _known_environment(cls, value: Any) -> Any:
        if isinstance(value, str):
            folded = value.strip().lower()
            if folded not in {e.value for e in Environment}:
                raise ValueError(
                    f"TICKETING_ENVIRONMENT={value!r} is not one of development, test, production "
                    "(anything else would run with development secrets)"
                )
            return folded
        return value

    @model_validator(mode="after")
    def _a_claim_outlasts_a_send(self) -> Settings:
        # A claim that ends while its send may still run lets another worker send the same email again.
        if self.mailer_claim_lease_seconds <= self.smtp_timeout_seconds:
            raise ValueError(
                f"TICKETING_MAILER_CLAIM_LEASE_SECONDS ({self.mailer_claim_lease_seconds}) must exceed "
                f"TICKETING_SMTP_TIMEOUT_SECONDS ({self.smtp_timeout_seconds}): a send must end before its claim"
            )
        return self

    @model_validator(mode="after")
    def _only_local_environments_run_unsafe(self) -> Settings:
        if self.environment.is_local:
            return self
        where = f"TICKETING_ENVIRONMENT={self.environment.value}"
        if self.fault_exit_before_publish:
            raise ValueError(f"fault injection cannot be enabled with {where}")
        for name in ("jwt_secret", "vnpay_hash_secret"):
            secret: str = getattr(self, name).get_secret_value()
            if secret in PUBLISHED_SECRETS or "dev-only" in secret:
                raise ValueError(f"TICKETING_{name.upper()} is a published development secret: set your own ({where})")
            if len(secret.encode()) < MIN_SECRET_BYTES:
                raise ValueError(f"TICKETING_{name.upper()} must be at least {MIN_SECRET_BYTES} bytes ({where})")
        # The payment simulator approves anything: it must never stand in for VNPAY outside development and test.
        if self.paysim_enabled:
            raise ValueError(f"the payment simulator cannot be enabled with {where}")
        for name in ("vnpay_pay_url", "vnpay_api_url", "vnpay_return_url"):
            if not getattr(self, name).startswith("https://"):
                raise ValueError(f"set TICKETING_{name.upper()} to an https URL ({where})")
        if not self.smtp_host:
            raise ValueError(f"set TICKETING_SMTP_HOST ({where}; the embedded mail sink is for development)")
        return self

    @property
    def paysim_active(self) -> bool:
        if not self.environment.is_local:
            return False
        return True if self.paysim_enabled is None else self.paysim_enabled

    @property
    def vnpay_pay_endpoint(self) -> str:
        return self.vnpay_pay_url or f"http://127.0.0.1:{self.paysim_port}/paymentv2/vpcpay.html"

    @property
    def vnpay_api_endpoint(self) -> str:
        return self.vnpay_api_url or f"http://127.0.0.1:{self.paysim_port}/merchant_webapi/api/transaction"

    @property
    def vnpay_return_endpoint(self) -> str:
        return self.vnpay_return_url or f"http://127.0.0.1:{self.gateway_port}/payments/vnpay/return"

    @property
    def paysim_ipn_endpoint(self) -> str:
        return self.paysim_ipn_url or f"http://127.0.0.1:{self.gateway_port}/payments/vnpay/ipn"


@lru_cache
def get_settings() -> Settings:
    """The process's settings; a bad setting stops the process at start-up with one clear line per error."""
    try:
        return Settings()
    except ValidationError as exc:
        problems = "; ".join(f"{'.'.join(map(str, e['loc'])) or 'settings'}: {e['msg']}" for e in exc.errors())
        raise SystemExit(f"ticketing: invalid settings: {problems}") from None
