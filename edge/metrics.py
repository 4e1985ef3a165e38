"""The edge's Prometheus metrics, in a registry of their own; labelled children bound once.

Counters touched per request are plain prometheus-client children. Spool state (bytes, records, age,
corrupt and refused records) is read from the spool when scraped, so the hot path does no metric work
for it.
"""

from __future__ import annotations

import time
from bisect import bisect_left
from collections.abc import Callable, Iterator, Mapping

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily
from prometheus_client.registry import Collector

from common.metrics import new_registry
from edge.spool import Spool
from links.token import FORMAT_VERSION

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
FSYNC_BUCKETS = (0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 5.0)
OUTCOMES = (
    "redirect",
    "blocked",
    "invalid",
    "malformed",
    "oversized",
    "not_found",
    "method_not_allowed",
    # /u/ (one-click unsubscribe): recorded; the confirmation page shown (GET, HEAD: nothing recorded); a
    # POST refused (no List-Unsubscribe=One-Click, too large: 400, 413; the spool could not take it: 503).
    "unsubscribe",
    "unsubscribe_page",
    "unsubscribe_refused",
)


class EdgeMetrics:
    def __init__(self, registry: CollectorRegistry | None = None, *, restarts: int = 0, worker: int = 0) -> None:
        # Every series says which worker it is from: each worker counts for itself and is scraped on its own.
        self.registry = registry or new_registry("edge", FORMAT_VERSION, {"worker": str(worker)})
        r = self.registry
        # Touched by every redirect: plain integers, read by the registry at scrape time. prometheus-client's
        # Counter.inc and Histogram.observe take a lock on every call (the measured choice: see
        # loadtests/README.md, section "Results: the edge's hot-path metrics").
        self.outcome = {name: FastCounter() for name in OUTCOMES}
        self.handler_seconds = FastHistogram(HANDLER_BUCKETS)
        r.register(_RequestCollector(self.outcome, self.handler_seconds))
        batches = Counter("clickedge_edge_batches", "Batches sent to the collector by outcome", ["outcome"], registry=r)
        self.batch_shipped = batches.labels("shipped")
        self.batch_failed = batches.labels("failed")
        self.batch_dead_lettered = batches.labels("dead_lettered")
        # A 4xx the collector never gives for a batch (404, 405, ...): CLICKEDGE_COLLECTOR_URL is wrong.
        self.batch_misdirected = batches.labels("misdirected")
        self.clicks_shipped = Counter(
            "clickedge_edge_clicks_shipped", "Clicks acknowledged by the collector (committed)", registry=r
        )
        self.clicks_duplicate = Counter(
            "clickedge_edge_clicks_duplicate",
            "Shipped clicks the collector already had (redelivered)",
            registry=r,
        )
        self.clicks_dead_lettered = Counter(
            "clickedge_edge_clicks_dead_lettered",
            "Clicks in batches the collector refused as malformed",
            registry=r,
        )
        self.ship_retries = Counter(
            "clickedge_edge_ship_retries", "Batch sends retried after a retryable failure", registry=r
        )
        self.blocklist_errors = Counter(
            "clickedge_edge_blocklist_fetch_errors",
            "Fetches of the block list that failed (the worker keeps enforcing the list it has)",
            registry=r,
        )
        self.ship_errors = Counter(
            "clickedge_edge_ship_errors",
            "Unexpected exceptions in the shipper (a bug): caught, logged, and shipping retried",
            registry=r,
        )
        self.ship_seconds = Histogram(
            "clickedge_edge_ship_seconds", "Time for one batch round trip", buckets=SHIP_BUCKETS, registry=r
        )
        self.fsync_seconds = Histogram(
            "clickedge_edge_spool_fsync_seconds", "One group fsync", buckets=FSYNC_BUCKETS, registry=r
        )
        restarts_gauge = Gauge(
            "clickedge_edge_worker_restarts",
            "Times the supervisor has restarted this worker slot after it died (a crash loop shows here)",
            registry=r,
        )
        restarts_gauge.set(restarts)

    def watch_spool(self, spool: Spool, oldest_unacked_us: Callable[[], int | None], dead_letter_max: int) -> None:
        self.registry.register(_SpoolCollector(spool, oldest_unacked_us, dead_letter_max))

    def watch_http(self, errors: Mapping[str, int]) -> None:
        """Export the exceptions the HTTP layer caught (HttpServer.errors), read when scraped."""
        self.registry.register(_HttpErrorsCollector(errors))

    def watch_ready(self, ready: Callable[[], bool]) -> None:
        """Export what /readyz says, read when scraped: a draining worker shows on the dashboards."""
        self.registry.register(_ReadyCollector(ready))

    def watch_blocklist(self, entries: Callable[[], int], checked_at: Callable[[], float]) -> None:
        """Export the kill switch's list: its size, and when the collector last answered for it."""
        self.registry.register(_BlocklistCollector(entries, checked_at))


class FastCounter:
    """A counter for one event loop: no lock, no label lookup; exported by a collector."""

    __slots__ = ("value",)

    def __init__(self) -> None:
        self.value = 0

    def inc(self, amount: int = 1) -> None:
        self.value += amount


class FastHistogram:
    """A histogram for one event loop: a bisect and two additions per observation."""

    __slots__ = ("bounds", "counts", "sum")

    def __init__(self, bounds: tuple[float, ...]) -> None:
        self.bounds = bounds
        self.counts = [0] * (len(bounds) + 1)
        self.sum = 0.0

    def observe(self, value: float) -> None:
        self.counts[bisect_left(self.bounds, value)] += 1
        self.sum += value

    def buckets(self) -> list[tuple[str, float]]:
        cumulative, out = 0, []
        for bound, count in zip((*self.bounds, float("inf")), self.counts, strict=True):
            cumulative += count
            out.append(("+Inf" if bound == float("inf") else repr(bound), float(cumulative)))
        return out


class _RequestCollector(Collector):
    def __init__(self, outcome: dict[str, FastCounter], handler: FastHistogram) -> None:
        self._outcome = outcome
        self._handler = handler

    def collect(self) -> Iterator[CounterMetricFamily | HistogramMetricFamily]:
        requests = CounterMetricFamily(
            "clickedge_edge_requests", "Requests to tracked-link paths by outcome", labels=["outcome"]
        )
        for name, counter in self._outcome.items():
            requests.add_metric([name], counter.value)
        yield requests
        yield HistogramMetricFamily(
            "clickedge_edge_handler_seconds",
            "Time spent in the redirect handler",
            buckets=self._handler.buckets(),
            sum_value=self._handler.sum,
        )


class _HttpErrorsCollector(Collector):
    def __init__(self, errors: Mapping[str, int]) -> None:
        self._errors = errors

    def collect(self) -> Iterator[CounterMetricFamily]:
        family = CounterMetricFamily(
            "clickedge_edge_http_errors",
            "Exceptions caught at the HTTP layer, by where they came from (parser: answered 400; handler: 500)",
            labels=["stage"],
        )
        for stage, count in self._errors.items():
            family.add_metric([stage], count)
        yield family


class _BlocklistCollector(Collector):
    def __init__(self, entries: Callable[[], int], checked_at: Callable[[], float]) -> None:
        self._entries = entries
        self._checked_at = checked_at

    def collect(self) -> Iterator[GaugeMetricFamily]:
        yield GaugeMetricFamily(
            "clickedge_edge_blocklist_entries",
            "Blocks this worker enforces (campaigns, links and destination hosts)",
            value=float(self._entries()),
        )
        yield GaugeMetricFamily(
            "clickedge_edge_blocklist_checked_timestamp_seconds",
            "When the collector last answered this worker for the block list (Unix time; 0: not yet)",
            value=self._checked_at(),
        )


class _ReadyCollector(Collector):
    def __init__(self, ready: Callable[[], bool]) -> None:
        self._ready = ready

    def collect(self) -> Iterator[GaugeMetricFamily]:
        yield GaugeMetricFamily(
            "clickedge_edge_ready",
            "1 while /readyz answers 200; 0 while draining or while the spool refuses clicks",
            value=1.0 if self._ready() else 0.0,
        )


class _SpoolCollector(Collector):
    def __init__(self, spool: Spool, oldest_unacked_us: Callable[[], int | None], dead_letter_max: int) -> None:
        self._spool = spool
        self._oldest = oldest_unacked_us
        self._dead_letter_max = dead_letter_max

    def collect(self) -> Iterator[GaugeMetricFamily | CounterMetricFamily]:
        spool, stats = self._spool, self._spool.stats
        yield GaugeMetricFamily(
            "clickedge_edge_spool_bytes",
            "Bytes in the spool not yet acknowledged by the collector",
            value=spool.unacknowledged_bytes,
        )
        yield GaugeMetricFamily(
            "clickedge_edge_spool_max_bytes",
            "Unshipped bytes the spool may hold before it refuses clicks (CLICKEDGE_SPOOL_MAX_BYTES)",
            value=spool.max_bytes,
        )
        yield GaugeMetricFamily(
            "clickedge_edge_spool_records",
            "Clicks in the spool not yet acknowledged by the collector",
            value=spool.unacknowledged_records,
        )
        oldest = self._oldest()
        age = max(0.0, time.time() - oldest / 1e6) if oldest is not None else 0.0
        yield GaugeMetricFamily(
            "clickedge_edge_spool_oldest_unacked_seconds",
            "Age of the oldest click not yet acknowledged",
            value=age,
        )
        yield GaugeMetricFamily(
            "clickedge_edge_dead_letter_bytes",
            "Bytes in this worker's dead-letter file (batches the collector refused); they count against the cap",
            value=spool.external_bytes,
        )
        yield GaugeMetricFamily(
            "clickedge_edge_dead_letter_max_bytes",
            "What the dead-letter file may hold: a quarter of CLICKEDGE_SPOOL_MAX_BYTES",
            value=self._dead_letter_max,
        )
        yield GaugeMetricFamily(
            "clickedge_edge_spool_healthy",
            "1 while clicks can be made durable, 0 after a refused append",
            value=1.0 if spool.healthy else 0.0,
        )
        for name, doc, value in (
            (
                "clickedge_edge_clicks_undurable",
                "Answered clicks that could not be written to the spool",
                stats.undurable,
            ),
            (
                "clickedge_edge_spool_replayed_records",
                "Unacknowledged clicks found in the spool at start",
                stats.replayed,
            ),
            ("clickedge_edge_spool_corrupt_records", "Spool records skipped as corrupt", stats.corrupt),
            (
                "clickedge_edge_spool_truncated_bytes",
                "Bytes of torn records cut from the spool at start",
                stats.truncated_bytes,
            ),
            ("clickedge_edge_spool_fsync_errors", "Failed spool fsyncs", stats.sync_errors),
            ("clickedge_edge_spool_ledger_errors", "Failed writes of the acknowledged position", stats.ledger_errors),
            (
                "clickedge_edge_spool_oversized_records",
                "Clicks the spool refused because no reader could read them back (a bug: fields are bounded first)",
                stats.oversized,
            ),
        ):
            yield CounterMetricFamily(name, doc, value=value)
