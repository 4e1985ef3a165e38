"""The collector's HTTP service: authenticated click ingest, health, readiness and metrics."""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import hmac
import logging
import math
import time
from collections import Counter
from collections.abc import AsyncIterator

import asyncpg
import orjson
from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from collector import api, apikeys, blocks, contacts, ingest, retention, settle, status, stored_agents
from collector.api import POOL
from collector.config import CollectorConfig
from collector.metrics import CollectorMetrics
from collector.networks import Reloading
from collector.rewriter import Rewriter
from collector.schema import ensure_partitions
from collector.ui.pages import add_pages
from collector.webhooks import Deliverer, outbox_state
from common.events import (
    BATCH_REJECTED_HEADER,
    EDGE_BLOCKLIST_PATH,
    EDGE_HEADER,
    SPOOL_CONTENT_TYPE,
    BatchError,
    Click,
    decode_batch,
    decode_spooled,
    now_us,
)

log = logging.getLogger("clickedge.collector")

CONFIG = web.AppKey("config", CollectorConfig)
METRICS = web.AppKey("metrics", CollectorMetrics)
DRAINING = web.AppKey("draining", asyncio.Event)
WEBHOOKS = web.AppKey("webhooks", Deliverer)
JUDGE = web.AppKey("judge", settle.Judge)
BLOCKLIST = web.AppKey("blocklist", blocks.EdgeListCache)
EDGES = web.AppKey("edges", status.EdgeBook)

# Errors after which the database may be fine again soon: answer 503 so the edge retries later.
DB_UNAVAILABLE = (
    OSError,
    asyncio.TimeoutError,
    asyncpg.PostgresConnectionError,
    asyncpg.InterfaceError,
    asyncpg.CannotConnectNowError,
    asyncpg.TooManyConnectionsError,
)
PARTITION_CHECK_SECONDS = 3600.0
SETTLE_INTERVAL = 0.5  # seconds between passes of the verdict settler while nothing more is due
SETTLE_BATCH = 2000  # clicks per settling transaction
DEFAULT_ROWS_CAP = 10_000
UNKNOWN_EDGE = "(a batch naming no edge)"


def json_error(status: int, message: str) -> web.Response:
    return web.Response(status=status, body=orjson.dumps({"error": message}), content_type="application/json")


def batch_rejected(message: str) -> web.Response:
    """A 400 for a batch that can never be written as it is. The header tells the edge it is the collector
    saying so (it sets the batch aside), not a proxy or a wrong URL answering (it keeps retrying)."""
    response = json_error(400, message)
    response.headers[BATCH_REJECTED_HEADER] = "invalid"
    return response


async def ingest_clicks(request: web.Request) -> web.Response:
    """An edge's batch: authenticated, decoded, written exactly once; 200 only after COMMIT."""
    app = request.app
    config, metrics = app[CONFIG], app[METRICS]
    batch = await _read_batch(request, config, metrics)
    if isinstance(batch, web.Response):
        if batch.headers.get(BATCH_REJECTED_HEADER):
            app[EDGES].rejected(UNKNOWN_EDGE, _error_text(batch))
        return batch
    edge, clicks = batch
    metrics.batch_size.observe(len(clicks))
    clicks, blocked, unsubscribing = ingest.split_outcomes(clicks)
    clicks, refused = ingest.check_clock(clicks, now_us(), config.max_clock_skew_us, config.max_click_age_us)
    refused = blocked + refused
    result = await _write_batch(app, edge, clicks, refused, unsubscribing)
    if isinstance(result, web.Response):
        if result.headers.get(BATCH_REJECTED_HEADER):
            app[EDGES].rejected(edge, _error_text(result))
        return result
    lag = _count_batch(metrics, edge, clicks, refused, result)
    app[EDGES].note(edge, result.received, lag)
    if (result.first_clicks_with_actions or result.unsubscribes_applied) and WEBHOOKS in app:
        app[WEBHOOKS].wake.set()
    reply = {
        "received": result.received,
        "inserted": result.inserted,
        "duplicates": result.duplicates,
        "refused": result.refused,
        "unsubscribes": result.unsubscribes,
    }
    return web.Response(body=orjson.dumps(reply), content_type="application/json")


async def edge_blocklist(request: web.Request) -> web.Response:
    """The active block list for edges (the kill switch, collector/blocks.py), with the ingest secret; 304 when
    the edge's ETag is current."""
    app = request.app
    if not _authorized(request, app[CONFIG].ingest_secret):
        return json_error(401, "missing or wrong ingest secret (Authorization: Bearer ...)")
    try:
        async with app[POOL].acquire() as conn:
            current = await app[BLOCKLIST].current(conn)
    except (*DB_UNAVAILABLE, asyncpg.PostgresError) as exc:
        log.warning("could not read the block list: %r", exc)
        return json_error(503, "database unavailable: edges keep enforcing the list they have")
    headers = {"ETag": current.etag, "Cache-Control": "no-cache"}
    if request.headers.get("If-None-Match") == current.etag:
        return web.Response(status=304, headers=headers)
    return web.Response(body=current.body, content_type="application/json", headers=headers)


async def _read_batch(
    request: web.Request, config: CollectorConfig, metrics: CollectorMetrics
) -> tuple[str, list[Click]] | web.Response:
    """The batch's edge and clicks, or the answer refusing it (401, 413, or 400 for a batch never valid)."""
    if not _authorized(request, config.ingest_secret):
        metrics.batch_unauthorized.inc()
        return json_error(401, "missing or wrong ingest secret (Authorization: Bearer ...)")
    try:
        body = await request.read()
    except web.HTTPRequestEntityTooLarge:
        metrics.batch_rejected.inc()
        return json_error(413, f"batch body is larger than {config.max_body_bytes} bytes")
    try:
        if request.content_type == SPOOL_CONTENT_TYPE:
            edge = request.headers.get(EDGE_HEADER, "")
            return edge, decode_spooled(edge, body)
        return decode_batch(orjson.loads(body))
    except orjson.JSONDecodeError as exc:
        metrics.batch_rejected.inc()
        return batch_rejected(f"batch is not valid JSON: {exc}")
    except BatchError as exc:
        metrics.batch_rejected.inc()
        log.warning("rejected a batch: %s", exc)
        return batch_rejected(str(exc))


async def _write_batch(
    app: web.Application, edge: str, clicks: list[Click], refused: list[ingest.Refused], unsubscribing: list[Click]
) -> ingest.IngestResult | web.Response:
    """The batch written and committed, or the answer saying why not: 503 (retry later), or 400 for a batch
    the database will never take."""
    config, metrics = app[CONFIG], app[METRICS]
    started = time.perf_counter()
    try:
        async with asyncio.timeout(config.db_timeout), app[POOL].acquire() as conn:
            result = await ingest.ingest(conn, edge, clicks, refused, app[JUDGE], unsubscribing)
    except DB_UNAVAILABLE as exc:
        metrics.batch_db_error.inc()
        log.warning("database unavailable, batch of %d not written: %r", len(clicks), exc)
        return json_error(503, "database unavailable; retry later")
    except (asyncpg.DataError, asyncpg.IntegrityConstraintViolationError, asyncpg.CardinalityViolationError) as exc:
        # Classes 21, 22 and 23: this batch can never be written as it is; resending it would block the
        # edge's whole spool behind it. The edge keeps it in its dead-letter file instead.
        metrics.batch_rejected.inc()
        log.error("database refused a batch of %d: %s (sqlstate %s)", len(clicks), exc, exc.sqlstate)
        return batch_rejected(f"database refused the batch: {exc}")
    except asyncpg.PostgresError as exc:
        metrics.batch_db_error.inc()
        log.error("database error on a batch of %d: %s (sqlstate %s)", len(clicks), exc, exc.sqlstate)
        return json_error(503, "database error; retry later")
    metrics.db_latency.observe(time.perf_counter() - started)
    return result


def _count_batch(
    metrics: CollectorMetrics,
    edge: str,
    clicks: list[Click],
    refused: list[ingest.Refused],
    result: ingest.IngestResult,
) -> float | None:
    """A written batch in the metrics, and its refused clicks in the log; its lag (None without clicks)."""
    lag = None
    if clicks:  # refused ones left out: a wrong clock is not lag
        oldest_us = min(click.clicked_at_us for click in clicks)
        lag = max(0.0, time.time() - oldest_us / 1e6)
        metrics.ingest_lag.observe(lag)
    metrics.batch_ok.inc()
    metrics.clicks_received.inc(result.received)
    metrics.clicks_inserted.inc(result.inserted)
    metrics.clicks_duplicate.inc(result.duplicates)
    for reason, count in result.newly_refused:
        metrics.clicks_refused[reason].inc(count)
    for verdict, count in result.verdicts:
        metrics.clicks_by_verdict[verdict].inc(count)
    metrics.unsubscribes.inc(result.unsubscribes_applied)
    late = [r for r in refused if r.reason != ingest.BLOCKED]  # a blocked link is no clock's fault
    if late:
        log.warning(
            "edge %s sent %d clicks with implausible times (%s); kept in refused_clicks",
            edge,
            len(late),
            ", ".join(f"{reason} {count}" for reason, count in Counter(r.reason for r in late).items()),
        )
    return lag


def _error_text(response: web.Response) -> str:
    body = response.body
    try:
        return str(orjson.loads(body if isinstance(body, bytes) else b"{}")["error"])
    except (orjson.JSONDecodeError, KeyError, TypeError):
        return "refused"


def _authorized(request: web.Request, secret: str) -> bool:
    given = apikeys.bearer(request.headers.get("Authorization", ""))
    return given is not None and hmac.compare_digest(given, secret.encode())


async def healthz(request: web.Request) -> web.Response:
    return web.Response(text="ok\n")


async def database_problem(app: web.Application) -> str | None:
    """None if PostgreSQL answers within a second, else what went wrong."""
    try:
        async with asyncio.timeout(1.0), app[POOL].acquire() as conn:
            await conn.fetchval("SELECT 1")
    except (*DB_UNAVAILABLE, asyncpg.PostgresError) as exc:
        return exc.__class__.__name__
    return None


async def _outbox_state(app: web.Application) -> tuple[float, float]:
    """The webhook outbox's depth and oldest age; NaN (no value) when PostgreSQL does not answer in time."""
    try:
        async with asyncio.timeout(1.0), app[POOL].acquire() as conn:
            return await outbox_state(conn)
    except (*DB_UNAVAILABLE, asyncpg.PostgresError) as exc:
        log.warning("could not read the webhook outbox for /metrics: %r", exc)
        return math.nan, math.nan


async def _pending_state(app: web.Application) -> tuple[float, float]:
    """Clicks waiting for their verdict and the oldest one's wait; NaN when PostgreSQL does not answer."""
    try:
        async with asyncio.timeout(1.0), app[POOL].acquire() as conn:
            return await settle.pending_state(conn)
    except (*DB_UNAVAILABLE, asyncpg.PostgresError) as exc:
        log.warning("could not read the pending verdicts for /metrics: %r", exc)
        return math.nan, math.nan


async def readyz(request: web.Request) -> web.Response:
    if request.app[DRAINING].is_set():
        return web.Response(status=503, text="draining\n")
    problem = await database_problem(request.app)
    if problem is not None:
        return web.Response(status=503, text=f"database unreachable: {problem}\n")
    return web.Response(text="ready\n")


async def default_partition_rows(app: web.Application) -> int | None:
    """Rows in clicks_default, counted up to DEFAULT_ROWS_CAP (cheap while it is empty, as it should be);
    None if the database does not answer within a second."""
    try:
        async with asyncio.timeout(1.0), app[POOL].acquire() as conn:
            rows: int = await conn.fetchval(
                f"SELECT count(*) FROM (SELECT 1 FROM clicks_default LIMIT {DEFAULT_ROWS_CAP}) t"  # noqa: S608 - a constant
            )
    except (*DB_UNAVAILABLE, asyncpg.PostgresError):
        return None
    return rows


async def metrics_handler(request: web.Request) -> web.Response:
    # The same check as /readyz, so an outage shows even while no batch arrives.
    metrics = request.app[METRICS]
    up = await database_problem(request.app) is None
    metrics.database_up.set(1 if up else 0)
    pending, oldest = await _outbox_state(request.app) if up else (math.nan, math.nan)
    metrics.webhook_pending.set(pending)
    metrics.webhook_oldest.set(oldest)
    waiting, waited = await _pending_state(request.app) if up else (math.nan, math.nan)
    metrics.verdicts_pending.set(waiting)
    metrics.verdict_oldest_pending.set(waited)
    rows = await default_partition_rows(request.app) if up else None
    if rows is not None:
        metrics.default_partition_rows.set(rows)
    body = generate_latest(metrics.registry)
    return web.Response(body=body, headers={"Content-Type": CONTENT_TYPE_LATEST})


async def _pool_ctx(app: web.Application) -> AsyncIterator[None]:
    config = app[CONFIG]
    # min_size=0: the collector starts, and reports not-ready, even while PostgreSQL is down.
    pool = await asyncpg.create_pool(
        config.database_url,
        min_size=0,
        max_size=config.pool_size,
        init=ingest.prepare_connection,
        command_timeout=config.db_timeout,
        timeout=5.0,
    )
    app[POOL] = pool
    yield
    await asyncio.wait_for(pool.close(), timeout=10.0)


async def _close_rewriter(app: web.Application) -> None:
    await app[api.REWRITER].close()


async def _secrets_ctx(app: web.Application) -> AsyncIterator[None]:
    """The master secret, read (or made) once at start: it signs webhooks and keys erasure tombstones."""
    master = app[CONFIG].webhook_secret_bytes()
    app[api.WEBHOOK_MASTER] = master
    app[JUDGE] = dataclasses.replace(app[JUDGE], erasure_key=contacts.tombstone_key(master))
    yield


async def _webhooks_ctx(app: web.Application) -> AsyncIterator[None]:
    config = app[CONFIG]
    master = app[api.WEBHOOK_MASTER]
    deliverer = Deliverer(app[POOL], master, config.webhook_allow_networks, app[METRICS])
    app[WEBHOOKS] = deliverer
    task = asyncio.create_task(deliverer.run(), name="webhook-delivery")
    yield
    task.cancel()
    await asyncio.gather(task, return_exceptions=True)


async def _edges_ctx(app: web.Application) -> AsyncIterator[None]:
    """Each edge's batches, written for the status page every few seconds, and once more at shutdown."""
    app[EDGES] = status.EdgeBook()
    task = asyncio.create_task(_flush_edges(app), name="edge-status")
    yield
    task.cancel()
    await asyncio.gather(task, return_exceptions=True)
    with contextlib.suppress(*DB_UNAVAILABLE, asyncpg.PostgresError):
        async with asyncio.timeout(2.0), app[POOL].acquire() as conn:
            await app[EDGES].flush(conn)


async def _flush_edges(app: web.Application) -> None:
    while True:
        await asyncio.sleep(status.FLUSH_SECONDS)
        try:
            async with asyncio.timeout(app[CONFIG].db_timeout), app[POOL].acquire() as conn:
                await app[EDGES].flush(conn)
        except (*DB_UNAVAILABLE, asyncpg.PostgresError) as exc:
            log.warning("could not write the edges' status: %r", exc)


async def _maintenance_ctx(app: web.Application) -> AsyncIterator[None]:
    task = asyncio.create_task(_maintain_partitions(app), name="partition-maintenance")
    yield
    task.cancel()
    await asyncio.gather(task, return_exceptions=True)


async def _settler_ctx(app: web.Application) -> AsyncIterator[None]:
    task = asyncio.create_task(_settle_forever(app), name="verdict-settler")
    yield
    task.cancel()
    await asyncio.gather(task, return_exceptions=True)


async def _settle_forever(app: web.Application) -> None:
    """Settle due clicks: pass after pass while a pass finds a full batch, else every SETTLE_INTERVAL."""
    metrics, judge = app[METRICS], app[JUDGE]
    while True:
        try:
            async with app[POOL].acquire() as conn:
                result = await settle.settle(conn, judge, limit=SETTLE_BATCH)
        except (*DB_UNAVAILABLE, asyncpg.PostgresError) as exc:
            metrics.settle_errors.inc()
            log.warning("could not settle verdicts: %r", exc)
            await asyncio.sleep(SETTLE_INTERVAL)
            continue
        for verdict, count in result.verdicts.items():
            metrics.clicks_by_verdict[verdict].inc(count)
        if result.applied and WEBHOOKS in app:
            app[WEBHOOKS].wake.set()
        if result.claimed < SETTLE_BATCH:
            await asyncio.sleep(SETTLE_INTERVAL)


async def _maintain_partitions(app: web.Application) -> None:
    """Hourly, and once at start: make the coming months' partitions of clicks, then (with
    CLICKEDGE_RETENTION_DAYS) remove the raw clicks older than the retention."""
    days = app[CONFIG].retention_days
    while True:
        try:
            async with app[POOL].acquire() as conn:
                before = retention.cutoff(days) if days is not None else None
                created = await ensure_partitions(conn, retention.months_to_keep_back(before))
                if created:
                    log.info("created %d click partitions", created)
                if days is not None:
                    _removed(app[METRICS], await retention.run(conn, days))
        except (*DB_UNAVAILABLE, asyncpg.PostgresError) as exc:
            log.warning("could not check click partitions or apply retention: %r", exc)
        await asyncio.sleep(PARTITION_CHECK_SECONDS)


def _removed(metrics: CollectorMetrics, removed: retention.Removed) -> None:
    metrics.retention_partitions_dropped.inc(len(removed.partitions))
    metrics.retention_rows_deleted["clicks_default"].inc(removed.default_rows)
    metrics.retention_rows_deleted["refused_clicks"].inc(removed.refused_rows)
    metrics.retention_last_success.set(time.time())
    if removed.partitions or removed.default_rows or removed.refused_rows:
        log.info(
            "retention: dropped %s; deleted %d rows of clicks_default and %d of refused_clicks (raw clicks before %s)",
            ", ".join(removed.partitions) or "no partition",
            removed.default_rows,
            removed.refused_rows,
            removed.cutoff.isoformat(timespec="seconds"),
        )


def create_app(config: CollectorConfig, metrics: CollectorMetrics | None = None) -> web.Application:
    app = web.Application(client_max_size=config.max_body_bytes, middlewares=[api.errors])
    app[CONFIG] = config
    app[METRICS] = metrics or CollectorMetrics()
    app[DRAINING] = asyncio.Event()
    app.cleanup_ctx.append(_secrets_ctx)
    app.cleanup_ctx.append(_pool_ctx)
    app.cleanup_ctx.append(_maintenance_ctx)
    app.cleanup_ctx.append(_edges_ctx)
    app.cleanup_ctx.append(_webhooks_ctx)
    app.cleanup_ctx.append(_settler_ctx)
    app[JUDGE] = settle.Judge(
        config.verdict_policy,
        Reloading(config.scanner_networks).current,
        config.people_networks,
        config.verdict_hold,
        full_client_ips=config.client_ips == "full",
        reduce_agents=config.user_agents == stored_agents.REDUCED,
    )
    app[api.REWRITER] = Rewriter(
        config.key_path,
        config.public_url,
        workers=config.rewrite_workers,
        queue=config.rewrite_queue,
        timeout=config.rewrite_timeout,
    )
    app[api.WEBHOOK_ALLOW] = config.webhook_allow_networks
    app.on_cleanup.append(_close_rewriter)
    app[BLOCKLIST] = blocks.EdgeListCache()
    app.router.add_post("/v1/clicks", ingest_clicks)
    app.router.add_get(EDGE_BLOCKLIST_PATH, edge_blocklist)
    api.add_routes(app)
    app.router.add_get("/healthz", healthz)
    app.router.add_get("/readyz", readyz)
    app.router.add_get("/metrics", metrics_handler)
    add_pages(app)
    return app
