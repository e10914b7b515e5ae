"""Prometheus metrics (docs/operations.md lists them): defined once per process, updated where
things happen, exposed by `GET /metrics`.

With several worker processes `modelport serve` points PROMETHEUS_MULTIPROC_DIR at an empty
directory before the workers start: each process then writes its values to files there (the
client library's multiprocess mode), and `/metrics`, whichever worker answers it, reads them
all. Without it (one process, tests, another ASGI server) the values live in memory.
Gauges say how they combine across processes: summed over live processes (in flight, queue
depth, writes waiting) or the largest (a circuit's state, the write-behind lag).
"""

from __future__ import annotations

import os

from prometheus_client import (
    CONTENT_TYPE_LATEST,
    REGISTRY,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    generate_latest,
)
from prometheus_client import multiprocess as _multiprocess

MULTIPROC_ENV = "PROMETHEUS_MULTIPROC_DIR"
CONTENT_TYPE = CONTENT_TYPE_LATEST

# Seconds: from a fast cached answer to a long generation.
_DURATION_BUCKETS = (0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300, 600)
_TTFT_BUCKETS = (0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60)

requests = Counter(
    "modelport_requests",
    "HTTP requests by door, model, backend and status (a stream that failed after its 200 "
    "counts with the status of its error)",
    ["door", "model", "backend", "status"],
)
tokens = Counter(
    "modelport_tokens",
    "Tokens billed, by model and kind (prompt, completion, reasoning, cached)",
    ["model", "kind"],
)
cost = Counter("modelport_cost_nano_cny", "Cost charged, in nano-yuan (1e-9 CNY)", ["model"])
duration = Histogram(
    "modelport_request_duration_seconds",
    "Seconds from admission to the end of a generation",
    ["model", "backend"],
    buckets=_DURATION_BUCKETS,
)
ttft = Histogram(
    "modelport_time_to_first_token_seconds",
    "Seconds from admission to the first output token",
    ["model", "backend"],
    buckets=_TTFT_BUCKETS,
)
in_flight = Gauge(
    "modelport_requests_in_flight",
    "Generations admitted and not yet settled",
    ["model"],
    multiprocess_mode="livesum",
)
queue_depth = Gauge(
    "modelport_engine_queue_depth",
    "Requests waiting for an instance of an in-process engine",
    ["backend"],
    multiprocess_mode="livesum",
)
backend_in_flight = Gauge(
    "modelport_backend_in_flight",
    "Requests a backend is serving",
    ["backend"],
    multiprocess_mode="livesum",
)
upstream_errors = Counter(
    "modelport_upstream_errors",
    "Backend failures by kind (the error code: upstream_error, upstream_timeout, overloaded, "
    "internal_error…), before or after the answer started",
    ["backend", "kind"],
)
circuit_state = Gauge(
    "modelport_circuit_state",
    "A backend's circuit: 0 closed, 1 half-open, 2 open (the worst over worker processes)",
    ["backend"],
    multiprocess_mode="livemax",
)
circuit_opened = Counter(
    "modelport_circuit_opened",
    "Times a backend's circuit opened",
    ["backend"],
)
billing_lag = Gauge(
    "modelport_billing_write_behind_lag_seconds",
    "Seconds the oldest usage row or charge not yet written has waited",
    multiprocess_mode="livemax",
)
billing_pending = Gauge(
    "modelport_billing_write_behind_pending",
    "Usage rows, charges and lease changes waiting to be written",
    multiprocess_mode="livesum",
)


def multiprocess_dir() -> str | None:
    return os.environ.get(MULTIPROC_ENV) or None


def exposition() -> bytes:
    """Every metric in Prometheus' text format: all processes' in multiprocess mode."""
    if multiprocess_dir() is None:
        return generate_latest(REGISTRY)
    registry = CollectorRegistry()
    _multiprocess.MultiProcessCollector(registry)  # type: ignore[no-untyped-call]
    return generate_latest(registry)
