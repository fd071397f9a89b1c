"""Dead-letter operations for every service: the keeper that moves dead letters into PostgreSQL, and the
list / group / inspect / replay / purge operations behind `ticketing dlq` and the gateway's /admin/dlq API."""
