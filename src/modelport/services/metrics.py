"""Prometheus metrics (docs/operations.md lists them): defined once per process, updated where
things happen, exposed by `GET /metrics`.

With several worker processes `modelport serve` points PROMETHEUS_MULTIPROC_DIR at an empty
directory before the workers start: each process then writes its values to files there (the
client library's multiprocess mode), and `/metrics`, whichever worker answers it, reads them
all. Without it (one process, tests, another ASGI server) the values live in memory.
Gauges say how they combine across processes: summed over live processes (in flight, queue
depth, writes waiting) or the largest (a circuit's state, the write-behind lag).

The series every request moves (its count, tokens, cost, duration and time to first token)
are tallied here in plain numbers (`counter_series`, `histogram_series`) and handed to the
client library's values by `flush`: at every scrape, before it is read, and each second
(http/state.py's sampler), so another worker's counts reach a scrape within a second. The
client library's own path costs a lock round trip per value and a Python scan of the buckets
per observation, about 8 % of a proxied request's instructions (docs/performance.md,
2026-12-04).
"""

from __future__ import annotations

import os
from bisect import bisect_left
from typing import Any, TypeVar

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


class CounterSeries:
    """One counter series' increments, added up until the next `flush`."""

    __slots__ = ("_child", "pending")

    def __init__(self, child: Any) -> None:
        self._child = child
        self.pending: float = 0

    def inc(self, amount: float = 1) -> None:
        self.pending += amount

    def flush(self) -> None:
        pending = self.pending
        if pending:
            self.pending = 0
            self._child.inc(pending)


class HistogramSeries:
    """One histogram series' observations, counted per bucket until the next `flush`."""

    __slots__ = ("_bounds", "_child", "_counts", "_observed", "_sum")

    def __init__(self, child: Any) -> None:
        self._child = child
        # The client library's upper bounds, +Inf last, and its value per bucket (not
        # cumulative: its exposition adds them up), with the sum: the one place this module
        # reaches into it (tests/unit/services/test_metrics.py checks it stays so).
        self._bounds: tuple[float, ...] = tuple(child._upper_bounds)
        self._counts = [0] * len(self._bounds)
        self._sum = 0.0
        self._observed = False

    def observe(self, value: float) -> None:
        # The first bound at or above the value: Prometheus buckets count value <= le.
        self._counts[bisect_left(self._bounds, value)] += 1
        self._sum += value
        self._observed = True

    def flush(self) -> None:
        if not self._observed:
            return
        buckets = self._child._buckets
        counts = self._counts
        for index, count in enumerate(counts):
            if count:
                buckets[index].inc(count)
                counts[index] = 0
        self._child._sum.inc(self._sum)
        self._sum = 0.0
        self._observed = False


_S = TypeVar("_S", CounterSeries, HistogramSeries)
_tallied: dict[tuple[int, tuple[str, ...]], CounterSeries | HistogramSeries] = {}


def counter_series(family: Counter, *labels: str) -> CounterSeries:
    """`family`'s series with these label values, tallied (the same object each time)."""
    return _series(CounterSeries, family, labels)


def histogram_series(family: Histogram, *labels: str) -> HistogramSeries:
    """`family`'s series with these label values, tallied (the same object each time)."""
    return _series(HistogramSeries, family, labels)


def _series(kind: type[_S], family: Counter | Histogram, labels: tuple[str, ...]) -> _S:
    key = (id(family), labels)
    series = _tallied.get(key)
    if series is None:
        series = _tallied[key] = kind(family.labels(*labels))
    assert isinstance(series, kind)
    return series


def flush() -> None:
    """Hand every tallied series' counts to the client library (in multiprocess mode: write
    them to this process's files). Call on the event loop, where the tallies are moved."""
    for series in list(_tallied.values()):
        series.flush()


def multiprocess_dir() -> str | None:
    return os.environ.get(MULTIPROC_ENV) or None


def exposition() -> bytes:
    """Every metric in Prometheus' text format: all processes' in multiprocess mode."""
    if multiprocess_dir() is None:
        return generate_latest(REGISTRY)
    registry = CollectorRegistry()
    _multiprocess.MultiProcessCollector(registry)  # type: ignore[no-untyped-call]
    return generate_latest(registry)
