"""Every Prometheus metric notiflow exports, defined in one place."""

from __future__ import annotations

from functools import lru_cache
from typing import Any

from prometheus_client import Counter, Gauge, Histogram


@lru_cache(maxsize=4096)
def child(metric: Any, *values: str) -> Any:
    """``metric.labels(*values)``, memoised: ``labels()`` costs microseconds per call on the
    hot path (it validates and locks); the children themselves are long-lived."""
    return metric.labels(*values)


REQUESTS = Counter(
    "notiflow_requests_total", "Requests read from the ingest topic, by result", ["result"]
)
OUTCOMES = Counter(
    "notiflow_outcomes_total",
    "Delivery events emitted, by channel and status",
    ["channel", "status"],
)
DLQ_MESSAGES = Counter("notiflow_dlq_messages_total", "Messages sent to the DLQ, by kind", ["kind"])
OUTCOME_LATENCY = Histogram(
    "notiflow_outcome_latency_seconds",
    "Request timestamp to final delivery outcome",
    ["channel", "status"],
    buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300),
)
PROVIDER_ATTEMPTS = Counter(
    "notiflow_provider_attempts_total",
    "Provider attempts, by provider and result",
    ["provider", "result"],
)
MESSAGES_PRODUCED = Counter(
    "notiflow_messages_produced_total", "Messages acknowledged by Kafka", ["topic"]
)
PRODUCE_ERRORS = Counter(
    "notiflow_produce_errors_total", "Kafka delivery reports with an error", ["topic"]
)
PRODUCER_QUEUE_FULL = Counter(
    "notiflow_producer_queue_full_total",
    "Times the producer queue was full (backpressure)",
    ["topic"],
)
SOURCE_ERRORS = Counter("notiflow_source_errors_total", "Kafka consumer errors", ["topic"])
CONSUMER_LAG = Gauge(
    "notiflow_consumer_lag", "High watermark minus next offset to read", ["topic", "partition"]
)
CLICKHOUSE_ROWS = Counter("notiflow_clickhouse_rows_total", "Event rows inserted into ClickHouse")
CLICKHOUSE_ERRORS = Counter(
    "notiflow_clickhouse_insert_errors_total", "Failed ClickHouse inserts (retried)"
)
CIRCUIT_STATE = Gauge(
    "notiflow_circuit_state",
    "Provider circuit breaker: 0 closed, 1 half-open, 2 open",
    ["provider"],
)
CIRCUIT_TRANSITIONS = Counter(
    "notiflow_circuit_transitions_total", "Breaker state changes", ["provider", "state"]
)
FAILOVERS = Counter(
    "notiflow_failovers_total",
    "Deliveries moved to the next provider",
    ["from_provider", "to_provider"],
)
TOKENS_INVALIDATED = Counter(
    "notiflow_tokens_invalidated_total", "Dead push tokens reported by providers", ["provider"]
)
LEDGER_SKIPPED = Counter(
    "notiflow_ledger_skipped_total", "Sends skipped because the ledger shows them sent"
)
LEDGER_UNKNOWN = Counter(
    "notiflow_ledger_unknown_total", "Claimed-but-unconfirmed sends found on replay (resent)"
)
LEDGER_UNAVAILABLE = Counter(
    "notiflow_ledger_unavailable_total", "Ledger operations skipped: Redis unavailable"
)
ANALYTICS_LATE_EVENTS = Counter(
    "notiflow_analytics_late_events_total",
    "Events that reached their rollup minute after it closed",
)
PROFILE_CACHE = Counter(
    "notiflow_profile_lookups_total", "Profile lookups, by result (cache hit or miss)", ["result"]
)
PROFILE_ROUND_TRIPS = Counter(
    "notiflow_profile_round_trips_total", "Redis round trips for profile lookups (pipelined)"
)
PROFILE_UPDATES = Counter(
    "notiflow_profile_updates_total", "Profile updates applied from Kafka, by outcome", ["outcome"]
)
GC_PAUSE = Histogram(
    "notiflow_gc_pause_seconds",
    "Python cyclic garbage collections, by generation: each pauses the worker",
    ["generation"],
    buckets=(0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0),
)
