"""services/metrics.py's tallies: what a scrape shows after `flush` is what the client
library shows for the same increments and observations made directly."""

from __future__ import annotations

import math

from prometheus_client import CollectorRegistry, Counter, Histogram, generate_latest
from prometheus_client.parser import text_string_to_metric_families

from modelport.services import metrics
from modelport.services.metrics import CounterSeries, HistogramSeries

BUCKETS = (0.05, 0.1, 0.25, 0.5, 1, 2.5)
# On a bound, between bounds, below the first, past the last, zero, and large.
OBSERVED = [0.05, 0.1, 0.07, 0.0, 0.001, 2.5, 2.6, 1e9, 0.25, 0.2500001, 1.0]


def exposition(registry: CollectorRegistry) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    return {
        (sample.name, tuple(sorted(sample.labels.items()))): sample.value
        for family in text_string_to_metric_families(generate_latest(registry).decode())
        for sample in family.samples
        if not sample.name.endswith("_created")
    }


def twins() -> tuple[CollectorRegistry, CollectorRegistry]:
    return CollectorRegistry(), CollectorRegistry()


def test_a_tallied_histogram_shows_what_direct_observations_show() -> None:
    direct_registry, tallied_registry = twins()
    direct = Histogram("h", "h", ["model"], buckets=BUCKETS, registry=direct_registry)
    tallied = Histogram("h", "h", ["model"], buckets=BUCKETS, registry=tallied_registry)
    series = HistogramSeries(tallied.labels("m"))
    for value in OBSERVED:
        direct.labels("m").observe(value)
        series.observe(value)
    assert exposition(tallied_registry)[("h_count", (("model", "m"),))] == 0  # not yet flushed
    series.flush()
    assert exposition(tallied_registry) == exposition(direct_registry)
    # A second flush adds nothing; later observations add up with the earlier ones.
    series.flush()
    for value in (0.3, 7.0):
        direct.labels("m").observe(value)
        series.observe(value)
    series.flush()
    shown = exposition(tallied_registry)
    assert shown == exposition(direct_registry)
    assert shown[("h_count", (("model", "m"),))] == len(OBSERVED) + 2
    assert math.isclose(shown[("h_sum", (("model", "m"),))], sum(OBSERVED) + 7.3)


def test_a_tallied_counter_shows_what_direct_increments_show() -> None:
    direct_registry, tallied_registry = twins()
    direct = Counter("c", "c", ["kind"], registry=direct_registry)
    tallied = Counter("c", "c", ["kind"], registry=tallied_registry)
    series = CounterSeries(tallied.labels("prompt"))
    for amount in (1, 5, 0, 1234567, 2.5):
        direct.labels("prompt").inc(amount)
        series.inc(amount)
    series.flush()
    series.flush()
    assert exposition(tallied_registry) == exposition(direct_registry)


def test_series_are_made_once_and_flush_reaches_them_all() -> None:
    first = metrics.counter_series(metrics.requests, "openai", "test/tally", "b", "200")
    assert metrics.counter_series(metrics.requests, "openai", "test/tally", "b", "200") is first
    duration = metrics.histogram_series(metrics.duration, "test/tally", "b")
    child = metrics.requests.labels("openai", "test/tally", "b", "200")
    before = child._value.get()
    first.inc()
    first.inc()
    duration.observe(0.2)
    assert child._value.get() == before
    metrics.flush()
    assert child._value.get() == before + 2
    assert first.pending == 0
