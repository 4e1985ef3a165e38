"""The edge's Prometheus metrics, in a registry of their own; labelled children bound once."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, disable_created_metrics
from prometheus_client.platform_collector import PlatformCollector
from prometheus_client.process_collector import ProcessCollector

# 10 µs .. 1 s: the handler itself runs in microseconds.
HANDLER_BUCKETS = (
    0.00001,
    0.000025,
    0.00005,
    0.0001,
    0.00025,
    0.0005,
    0.001,
    0.0025,
    0.005,
    0.01,
    0.025,
    0.1,
    1.0,
)
SHIP_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)
OUTCOMES = ("redirect", "invalid", "malformed", "oversized", "not_found", "method_not_allowed")


class EdgeMetrics:
    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        disable_created_metrics()  # type: ignore[no-untyped-call]  # *_created series only add bulk
        self.registry = registry or CollectorRegistry()
        ProcessCollector(registry=self.registry)
        PlatformCollector(registry=self.registry)
        r = self.registry
        requests = Counter(
            "clickedge_edge_requests", "Requests to tracked-link paths by outcome", ["outcome"], registry=r
        )
        self.outcome = {name: requests.labels(name) for name in OUTCOMES}
        self.handler_seconds = Histogram(
            "clickedge_edge_handler_seconds",
            "Time spent in the redirect handler",
            buckets=HANDLER_BUCKETS,
            registry=r,
        )
        self.buffered = Gauge(
            "clickedge_edge_buffered_clicks",
            "Clicks held by this worker awaiting the collector's acknowledgement",
            registry=r,
        )
        self.dropped = Counter(
            "clickedge_edge_clicks_dropped",
            "Clicks answered but not kept because the buffer was full",
            registry=r,
        )
        batches = Counter(
            "clickedge_edge_batches", "Batches sent to the collector by outcome", ["outcome"], registry=r
        )
        self.batch_shipped = batches.labels("shipped")
        self.batch_failed = batches.labels("failed")
        self.batch_rejected = batches.labels("rejected")
        self.clicks_shipped = Counter(
            "clickedge_edge_clicks_shipped", "Clicks acknowledged by the collector", registry=r
        )
        self.ship_seconds = Histogram(
            "clickedge_edge_ship_seconds", "Time for one batch round trip", buckets=SHIP_BUCKETS, registry=r
        )
