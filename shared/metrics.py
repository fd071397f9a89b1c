"""Prometheus metrics shared by the services (each process exposes /metrics)."""

from __future__ import annotations

from prometheus_client import Counter, Gauge, Histogram, Info

HOLDS_PLACED = Counter("ticketing_holds_placed_total", "Orders whose tickets were held")
HOLDS_REJECTED = Counter("ticketing_holds_rejected_total", "Checkouts rejected", ["reason"])
HOLDS_RELEASED = Counter("ticketing_holds_released_total", "Holds released and their stock returned", ["status", "by"])
RELEASE_LATENESS = Histogram(
    "ticketing_hold_release_lateness_seconds",
    "Time from a hold's expires_at to its stock being back",
    buckets=(0.05, 0.1, 0.25, 0.5, 1, 2, 5, 10, 30, 60, 300),
)
HOLD_BATCH_SIZE = Histogram(
    "ticketing_hold_batch_size", "Checkouts decided per transaction", buckets=(1, 2, 4, 8, 16, 32, 64, 128, 256)
)
HANDLER_LATENCY = Histogram(
    "ticketing_handler_seconds",
    "Queue handler latency",
    ["queue"],
    buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5),
)
MESSAGES_DEAD_LETTERED = Counter(
    "ticketing_messages_dead_lettered_total", "Messages sent to a dead-letter queue", ["queue"]
)
MESSAGES_RETRIED = Counter("ticketing_messages_retried_total", "Messages sent to a retry queue", ["queue"])
OUTBOX_PUBLISHED = Counter("ticketing_outbox_published_total", "Outbox messages relayed", ["schema"])

# --- Mailer and dead-letter operations ---------------------------------------------------------
EMAILS_SENT = Counter("ticketing_emails_sent_total", "Emails accepted by the SMTP server", ["kind"])
EMAILS_FAILED = Counter("ticketing_emails_failed_total", "Email send attempts that failed", ["kind", "classification"])
EMAILS_DUPLICATE_SKIPPED = Counter(
    "ticketing_emails_duplicate_skipped_total",
    "Redelivered or replayed messages whose email was already sent",
    ["kind"],
)
EMAIL_SEND_SECONDS = Histogram(
    "ticketing_email_send_seconds",
    "Render and SMTP delivery of one email",
    buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30),
)
DEAD_LETTERS_STORED = Counter(
    "ticketing_dead_letters_stored_total", "Dead letters moved from a DLQ into the ops table", ["service"]
)
DEAD_LETTERS_REPLAYED = Counter("ticketing_dead_letters_replayed_total", "Dead letters replayed", ["service"])
DEAD_LETTERS_PURGED = Counter("ticketing_dead_letters_purged_total", "Dead letters purged", ["service"])
DEAD_LETTERS_WAITING = Gauge(
    "ticketing_dead_letters_waiting", "Dead letters waiting for an operator (alert when above 0)", ["service"]
)
DEAD_LETTER_OLDEST_AGE = Gauge(
    "ticketing_dead_letter_oldest_age_seconds", "Age of the oldest waiting dead letter", ["service"]
)

# Search and caching (search service and the gateway's read paths)
SEARCH_LATENCY = Histogram(
    "ticketing_search_seconds",
    "GET /search latency inside the gateway, by the path that answered",
    ["source"],
    buckets=(0.0005, 0.001, 0.002, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5),
)
SEARCH_FALLBACKS = Counter("ticketing_search_fallbacks_total", "Reads answered by PostgreSQL", ["reason"])
CACHE_REQUESTS = Counter("ticketing_cache_requests_total", "Cache lookups", ["cache", "result"])
CACHE_LOADS = Counter("ticketing_cache_loads_total", "Cache entries rebuilt from PostgreSQL", ["cache"])
INDEX_WRITES = Counter("ticketing_search_index_writes_total", "Index updates applied", ["kind"])
INDEX_REBUILDS = Counter("ticketing_search_rebuilds_total", "Full index rebuilds", ["reason"])
INDEX_REBUILD_SECONDS = Histogram(
    "ticketing_search_rebuild_seconds",
    "Full index rebuild time",
    buckets=(0.1, 0.5, 1, 2, 5, 10, 30, 60, 120, 300),
)

# --- Outbox backlog (first contact: the "outbox backlog" alert in deploy/prometheus) ------------
# Rows are deleted once relayed, so what is left in <schema>.outbox is the backlog; its oldest row's age is
# the better alert signal (a backlog that drains is fine, one that stops draining is not).
OUTBOX_BACKLOG = Gauge("ticketing_outbox_backlog", "Outbox rows not yet relayed (counted up to 100,000)", ["schema"])
OUTBOX_OLDEST_AGE = Gauge(
    "ticketing_outbox_oldest_age_seconds", "Age of the oldest outbox row not yet relayed (0 when empty)", ["schema"]
)

# Which process answered (several replicas of a service may run; `ticketing up --scale`): pid and replica name.
PROCESS = Info("ticketing_process", "This process: service, replica name, pid")

# --- The process's own pauses -------------------------------------------------------------------
GC_PAUSE = Histogram(
    "ticketing_gc_pause_seconds",
    "Pauses of the cyclic garbage collector, by generation collected",
    ["generation"],
    buckets=(0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25),
)
