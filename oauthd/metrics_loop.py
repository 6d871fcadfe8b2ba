"""Metric families for the /mcp hot path, updated without locks: only the event loop
touches them (prometheus_client's own take a lock per update)."""

from __future__ import annotations

from collections.abc import Iterator
from itertools import accumulate

from prometheus_client.core import CounterMetricFamily, HistogramMetricFamily, Metric


class LoopHistogram:
    """A Prometheus histogram for the /mcp hot path: one plain list per label set (a count
    per bucket, then the sum), updated without locks because only the event loop touches
    it, and turned into a family when scraped. prometheus_client's `Histogram` takes a lock
    per bucket update, which costs a /mcp request more than the bearer check does."""

    def __init__(
        self, name: str, documentation: str, labels: tuple[str, ...], buckets: tuple[float, ...]
    ) -> None:
        self._name, self._documentation, self._labels = name, documentation, labels
        self._buckets = buckets
        self._series: dict[tuple[str, ...], list[float]] = {}

    def series(self, values: tuple[str, ...]) -> list[float]:
        """The list to update for `values`: `[bisect_left(buckets, x)] += 1`, `[-1] += x`."""
        found = self._series.get(values)
        if found is None:
            found = self._series[values] = [0] * (len(self._buckets) + 2)
        return found

    def collect(self) -> Iterator[Metric]:
        family = HistogramMetricFamily(self._name, self._documentation, labels=self._labels)
        bounds = [*(repr(float(b)) for b in self._buckets), "+Inf"]
        for values, series in self._series.items():
            cumulative = accumulate(series[:-1])
            family.add_metric(list(values), list(zip(bounds, cumulative, strict=True)), series[-1])
        yield family

    def describe(self) -> Iterator[Metric]:
        yield HistogramMetricFamily(self._name, self._documentation, labels=self._labels)


class LoopCounter:
    """A Prometheus counter for the /mcp hot path, like `LoopHistogram`: a one-element
    list per label set, incremented without a lock (only the event loop touches it)."""

    def __init__(self, name: str, documentation: str, labels: tuple[str, ...]) -> None:
        self._name, self._documentation, self._labels = name, documentation, labels
        self._series: dict[tuple[str, ...], list[int]] = {}

    def series(self, values: tuple[str, ...]) -> list[int]:
        found = self._series.get(values)
        if found is None:
            found = self._series[values] = [0]
        return found

    def collect(self) -> Iterator[Metric]:
        family = CounterMetricFamily(self._name, self._documentation, labels=self._labels)
        for values, series in self._series.items():
            family.add_metric(list(values), series[0])
        yield family

    def describe(self) -> Iterator[Metric]:
        yield CounterMetricFamily(self._name, self._documentation, labels=self._labels)
