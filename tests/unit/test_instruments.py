"""Our lock-free instruments must expose exactly what prometheus-client's own would."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client.parser import text_string_to_metric_families

from telemetry.instruments import CounterVec, GaugeVec, HistogramVec, InstrumentCollector

BUCKETS = (0.001, 0.01, 0.1, 1.0)


def exposed(registry: CollectorRegistry) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    text = generate_latest(registry).decode()
    return {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
        if not s.name.endswith("_created")
    }


@settings(max_examples=100, deadline=None)
@given(
    st.lists(
        st.tuples(
            st.sampled_from(["GET", "POST"]),
            st.one_of(st.sampled_from(BUCKETS), st.floats(0, 5, allow_nan=False)),
        ),
        max_size=40,
    )
)
def test_same_exposition_as_prometheus_client(observations: list[tuple[str, float]]) -> None:
    ours, theirs = CollectorRegistry(), CollectorRegistry()
    counter = CounterVec("lab_requests_total", "requests", ["method"])
    gauge = GaugeVec("lab_open", "open", ["method"])
    histogram = HistogramVec("lab_seconds", "durations", ["method"], BUCKETS)
    ours.register(InstrumentCollector([counter, gauge, histogram]))
    their_counter = Counter("lab_requests_total", "requests", ["method"], registry=theirs)
    their_gauge = Gauge("lab_open", "open", ["method"], registry=theirs)
    their_histogram = Histogram(
        "lab_seconds", "durations", ["method"], buckets=BUCKETS, registry=theirs
    )
    for method, value in observations:
        counter.inc((method,), value)
        gauge.add((method,), 1)
        histogram.observe((method,), value)
        their_counter.labels(method).inc(value)
        their_gauge.labels(method).inc()
        their_histogram.labels(method).observe(value)
    assert exposed(ours) == exposed(theirs)


def test_counter_names_end_in_total() -> None:
    with pytest.raises(ValueError, match="_total"):
        CounterVec("lab_requests", "x", [])
