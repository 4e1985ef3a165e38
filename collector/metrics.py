"""The collector's Prometheus metrics, in a registry of their own per app."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

from collector.classify import VERDICTS
from collector.ingest import REASONS
from common.metrics import new_registry
from links.token import FORMAT_VERSION

# 100 µs .. ~30 s
LATENCY_BUCKETS = (
    0.0001,
    0.00025,
    0.0005,
    0.001,
    0.0025,
    0.005,
    0.01,
    0.025,
    0.05,
    0.1,
    0.25,
    0.5,
    1.0,
    2.5,
    5.0,
    10.0,
    30.0,
)
SIZE_BUCKETS = (1, 10, 50, 100, 250, 500, 1000, 2500, 5000, 10000)
# 10 ms .. 6 h: a click normally commits within a second; after an outage, edges ship hours of backlog.
LAG_BUCKETS = (0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 300.0, 900.0, 3600.0, 21600.0)


class CollectorMetrics:
    def __init__(self, registry: CollectorRegistry | None = None, *, restarts: int = 0) -> None:
        self.registry = registry or new_registry("collector", FORMAT_VERSION)
        r = self.registry
        self.clicks_received = Counter(
            "clickedge_collector_clicks_received", "Clicks received in accepted batches", registry=r
        )
        self.clicks_inserted = Counter(
            "clickedge_collector_clicks_inserted", "Clicks newly written to PostgreSQL", registry=r
        )
        self.clicks_duplicate = Counter(
            "clickedge_collector_clicks_duplicate",
            "Clicks already present (redelivered), not re-applied",
            registry=r,
        )
        batches = Counter("clickedge_collector_batches", "Click batches by outcome", ["outcome"], registry=r)
        self.batch_ok = batches.labels("ok")
        self.batch_rejected = batches.labels("rejected")
        self.batch_unauthorized = batches.labels("unauthorized")
        self.batch_db_error = batches.labels("db_error")
        self.batch_size = Histogram(
            "clickedge_collector_batch_clicks", "Clicks per received batch", buckets=SIZE_BUCKETS, registry=r
        )
        Gauge(
            "clickedge_collector_restarts",
            "Times the supervisor restarted this collector after it died",
            registry=r,
        ).set(restarts)
        self.database_up = Gauge(
            "clickedge_collector_database_up",
            "1 if PostgreSQL answered SELECT 1 within a second at this scrape, else 0",
            registry=r,
        )
        self.ingest_lag = Histogram(
            "clickedge_collector_ingest_lag_seconds",
            "Per committed batch: seconds from its oldest click (at the edge) to the commit",
            buckets=LAG_BUCKETS,
            registry=r,
        )
        # [issue 11 item 19] Clicks refused for their time, and what the default partition holds.
        refused = Counter(
            "clickedge_collector_clicks_refused",
            "Clicks refused and kept in refused_clicks, once per event id: future (more than "
            "CLICKEDGE_COLLECTOR_MAX_CLOCK_SKEW ahead of the collector's clock), too_old, or blocked (an edge "
            "answered 410: the link is blocked)",
            ["reason"],
            registry=r,
        )
        self.clicks_refused = {reason: refused.labels(reason) for reason in REASONS}
        self.unsubscribes = Counter(
            "clickedge_collector_unsubscribes",
            "One-click unsubscribes (RFC 8058) that did something: a contact's first with a campaign's messages, or "
            "one that took a contact off a list again (collector/unsubscribes.py)",
            registry=r,
        )
        self.default_partition_rows = Gauge(
            "clickedge_collector_default_partition_rows",
            "Rows in clicks_default at this scrape, counted up to 10000: clicks whose month had no partition "
            "(partition maintenance moves them into one within the hour)",
            registry=r,
        )
        deliveries = Counter(
            "clickedge_collector_webhook_deliveries",
            "Webhook delivery attempts by outcome: delivered; error or refused (by the destination policy), "
            "both retried; failed (the last attempt failed: given up)",
            ["outcome"],
            registry=r,
        )
        self.webhook_delivered = deliveries.labels("delivered")
        self.webhook_error = deliveries.labels("error")
        self.webhook_refused = deliveries.labels("refused")
        self.webhook_failed = deliveries.labels("failed")
        # Read from PostgreSQL at each scrape: the outbox is shared by every collector, so each reports it.
        self.webhook_pending = Gauge(
            "clickedge_collector_webhook_outbox_pending",
            "Webhook deliveries waiting to be delivered (in backoff included), read at this scrape",
            registry=r,
        )
        self.webhook_oldest = Gauge(
            "clickedge_collector_webhook_oldest_pending_seconds",
            "Age of the oldest waiting webhook delivery (0: none), read at this scrape",
            registry=r,
        )
        # [issue 14] Verdicts: clicks settled by verdict, and those still waiting (read at each scrape).
        verdicts = Counter(
            "clickedge_collector_clicks_by_verdict",
            "Clicks whose verdict became final, by verdict: human, scanner, preview or script",
            ["verdict"],
            registry=r,
        )
        self.clicks_by_verdict: dict[str, Counter] = {verdict: verdicts.labels(verdict) for verdict in VERDICTS}
        self.verdicts_pending = Gauge(
            "clickedge_collector_verdicts_pending",
            "Clicks waiting for their verdict (CLICKEDGE_COLLECTOR_VERDICT_HOLD), read at this scrape",
            registry=r,
        )
        self.verdict_oldest_pending = Gauge(
            "clickedge_collector_verdict_oldest_pending_seconds",
            "How long the oldest click waiting for its verdict has waited since it arrived (0: none), read at "
            "this scrape; above the hold means settling has fallen behind",
            registry=r,
        )
        self.settle_errors = Counter(
            "clickedge_collector_settle_errors",
            "Passes of the verdict settler that failed (database unavailable or an error); retried",
            registry=r,
        )
        # [issue 15] Retention (CLICKEDGE_RETENTION_DAYS): what its passes removed, and when one last worked.
        self.retention_partitions_dropped = Counter(
            "clickedge_collector_retention_partitions_dropped",
            "Monthly partitions of raw clicks dropped by retention (all their clicks older than the retention)",
            registry=r,
        )
        removed = Counter(
            "clickedge_collector_retention_rows_deleted",
            "Raw click rows older than the retention deleted one by one, by table: clicks_default, refused_clicks",
            ["table"],
            registry=r,
        )
        self.retention_rows_deleted: dict[str, Counter] = {
            table: removed.labels(table) for table in ("clicks_default", "refused_clicks")
        }
        self.retention_last_success = Gauge(
            "clickedge_collector_retention_last_success_timestamp_seconds",
            "When a retention pass last completed (Unix time; 0: none yet, or no retention set)",
            registry=r,
        )
        self.db_latency = Histogram(
            "clickedge_collector_db_seconds",
            "Time to write one batch, COPY to COMMIT",
            buckets=LATENCY_BUCKETS,
            registry=r,
        )
