"""The Prometheus registry of one process and the metrics shared by every route."""

from __future__ import annotations

from typing import Any

from prometheus_client import CollectorRegistry, Counter, Histogram, generate_latest
from prometheus_client.exposition import CONTENT_TYPE_LATEST


class Metrics:
    """One registry per process (not the global one), so tests can build many apps."""

    content_type = CONTENT_TYPE_LATEST

    def __init__(self) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        self.http_requests_total = Counter(
            "http_requests_total",
            "HTTP requests served, by route pattern.",
            ["endpoint", "method", "status"],
            registry=self.registry,
        )
        self.http_request_duration_seconds = Histogram(
            "http_request_duration_seconds",
            "HTTP request handling time, by route pattern.",
            ["endpoint"],
            buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5),
            registry=self.registry,
        )
        self.alerts_received_total = Counter(
            "sunflow_alerts_received_total",
            "Alerts accepted by intake (an Alertmanager notification counts once: its "
            "group is one incident), by source and outcome.",
            ["source", "outcome"],
            registry=self.registry,
        )
        # Alerts a sender (Alertmanager's or Grafana's max_alerts) left out of notifications
        # it sent: each such notification adds its `truncatedAlerts`. Both sources start at
        # 0, so the first truncation is seen by rate().
        self.alerts_truncated_total = Counter(
            "sunflow_alerts_truncated_total",
            "Alerts left out of notifications by their sender (truncatedAlerts), by source.",
            ["source"],
            registry=self.registry,
        )
        for source in ("alertmanager", "grafana"):
            self.alerts_truncated_total.labels(source)

        # Label children by label values: `labels(...)` takes a lock and builds a key on every
        # call, on the path of every request.
        self._children: dict[tuple[Any, ...], Any] = {}

    def request_served(self, endpoint: str, method: str, status: int, seconds: float) -> None:
        key = (endpoint, method, status)
        children = self._children.get(key)
        if children is None:
            children = (
                self.http_requests_total.labels(endpoint, method, str(status)),
                self.http_request_duration_seconds.labels(endpoint),
            )
            self._children[key] = children
        children[0].inc()
        children[1].observe(seconds)

    def alerts_received(self, source: str, outcome: str, count: int) -> None:
        key = ("alerts", source, outcome)
        child = self._children.get(key)
        if child is None:
            child = self._children[key] = self.alerts_received_total.labels(source, outcome)
        child.inc(count)

    def alerts_truncated(self, source: str, count: int) -> None:
        self.alerts_truncated_total.labels(source).inc(count)

    def render(self) -> bytes:
        return generate_latest(self.registry)
