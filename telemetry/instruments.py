"""Counters, gauges and histograms for one event loop, exported through prometheus-client.

prometheus-client's own metric objects take a lock on every update and look labels up
through a validating call; for metrics updated several times per request that was about
half of what telemetry cost a keep-alive request (docs/benchmarks.md). Here an update is a
dict operation on the event loop's thread, and a `Collector` turns the values into
prometheus-client metric families when /metrics is scraped (from the exporter's thread:
copies are taken with `list(...)`, which holds the GIL, so a scrape sees whole values).
"""

from __future__ import annotations

from bisect import bisect_left
from typing import TYPE_CHECKING

from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    Metric,
)
from prometheus_client.registry import Collector

if TYPE_CHECKING:
    from collections.abc import Iterator, Sequence

Labels = tuple[str, ...]


class CounterVec:
    """A counter per label set. `name` ends in `_total` (the exposition adds it back)."""

    def __init__(self, name: str, documentation: str, labelnames: Sequence[str]) -> None:
        if not name.endswith("_total"):
            raise ValueError(f"a counter's name ends in _total: {name}")
        self.name = name
        self.documentation = documentation
        self.labelnames = list(labelnames)
        self.values: dict[Labels, float] = {}

    def inc(self, labels: Labels, amount: float = 1.0) -> None:
        values = self.values
        values[labels] = values.get(labels, 0.0) + amount

    def family(self) -> Metric:
        family = CounterMetricFamily(
            self.name.removesuffix("_total"), self.documentation, labels=self.labelnames
        )
        for labels, value in list(self.values.items()):
            family.add_metric(list(labels), value)
        return family


class GaugeVec:
    def __init__(self, name: str, documentation: str, labelnames: Sequence[str]) -> None:
        self.name = name
        self.documentation = documentation
        self.labelnames = list(labelnames)
        self.values: dict[Labels, float] = {}

    def add(self, labels: Labels, amount: float) -> None:
        values = self.values
        values[labels] = values.get(labels, 0.0) + amount

    def family(self) -> Metric:
        family = GaugeMetricFamily(self.name, self.documentation, labels=self.labelnames)
        for labels, value in list(self.values.items()):
            family.add_metric(list(labels), value)
        return family


class HistogramVec:
    """A histogram per label set: a count per bucket (not cumulative) and a sum."""

    def __init__(
        self,
        name: str,
        documentation: str,
        labelnames: Sequence[str],
        buckets: Sequence[float],
    ) -> None:
        self.name = name
        self.documentation = documentation
        self.labelnames = list(labelnames)
        self.bounds = sorted(float(b) for b in buckets)
        # per label set: [count in bucket 0, ..., count above the last bound, sum]
        self.series: dict[Labels, list[float]] = {}

    def observe(self, labels: Labels, value: float) -> None:
        series = self.series.get(labels)
        if series is None:
            series = self.series[labels] = [0.0] * (len(self.bounds) + 2)
        series[bisect_left(self.bounds, value)] += 1  # le: a value on a bound counts in it
        series[-1] += value

    def family(self) -> Metric:
        family = HistogramMetricFamily(self.name, self.documentation, labels=self.labelnames)
        for labels, series in list(self.series.items()):
            counts = list(series)
            cumulative = 0.0
            buckets: list[tuple[str, float]] = []
            for bound, count in zip([*self.bounds, float("inf")], counts[:-1], strict=True):
                cumulative += count
                buckets.append(("+Inf" if bound == float("inf") else repr(bound), cumulative))
            family.add_metric(list(labels), buckets, counts[-1])
        return family


Instrument = CounterVec | GaugeVec | HistogramVec


class InstrumentCollector(Collector):
    """Exports a set of instruments to a prometheus-client registry."""

    def __init__(self, instruments: Sequence[Instrument]) -> None:
        self.instruments = list(instruments)

    def collect(self) -> Iterator[Metric]:
        for instrument in self.instruments:
            yield instrument.family()
