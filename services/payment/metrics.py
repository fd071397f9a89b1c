"""Payment metrics (exposed on each process's /metrics; the gateway counts its IPN answers)."""

from __future__ import annotations

from prometheus_client import Counter

PAYMENT_RESULTS = Counter(
    "ticketing_payment_results_total", "Provider results recorded (once each)", ["provider", "outcome", "source"]
)
RECONCILE_QUERIES = Counter("ticketing_payment_reconcile_queries_total", "querydr calls, by result", ["status"])
REFUNDS = Counter("ticketing_payment_refunds_total", "Refund calls, by result", ["status"])
OPERATOR_ACTIONS = Counter(
    "ticketing_payment_operator_actions_total", "Payment operator actions, by action and result", ["action", "result"]
)
PAYMENT_CONTRADICTIONS = Counter(
    "ticketing_payment_contradicted_records_total",
    "Recorded failures replaced by the provider's result that the money was taken (should stay 0)",
    ["provider", "source"],
)
