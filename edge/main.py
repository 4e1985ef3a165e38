"""Edge worker lifecycle: start, serve, drain in order on SIGTERM."""

from __future__ import annotations

import asyncio
import logging
import os
import socket
from collections.abc import Coroutine
from dataclasses import dataclass
from typing import Any

from common.process import install_stop_handlers, restarts, start_heartbeat
from common.settings import ConfigError
from edge.blocklist_sync import BlocklistSync
from edge.clientip import ClientIP
from edge.config import EdgeConfig
from edge.durability import ClickDurability
from edge.metrics import EdgeMetrics
from edge.protocol import Handler, HttpServer
from edge.redirect import MetricsEndpoint, RedirectHandler, SampledAccessLog
from edge.shipper import Shipper
from edge.spool import Spool, SpoolLockedError
from edge.syncer import Syncer
from links import keys

log = logging.getLogger("clickedge.edge")
REUSE_PORT_ENV = "CLICKEDGE_REUSE_PORT"  # set by `edge --workers N` (clickedge/workers.py) for its workers only
SAME_STOP_SECONDS = 2.0  # a worker's SIGTERMs this close together are one stop (see install_stop_handlers)


class SpoolUnavailableError(RuntimeError):
    """The spool cannot be opened now (disk full, failing, out of inodes); worth a restart later."""


def read_ingest_secret(config: EdgeConfig) -> str:
    if config.ingest_secret:
        return config.ingest_secret
    path = config.data_dir / "ingest.secret"
    try:
        return path.read_text().strip()
    except FileNotFoundError:
        raise ConfigError(f"no ingest secret: set CLICKEDGE_INGEST_SECRET or create {path}") from None


@dataclass
class RunningEdge:
    handler: RedirectHandler
    spool: Spool
    syncer: Syncer
    shipper: Shipper
    blocklist: BlocklistSync
    http: HttpServer
    port: int
    tasks: set[asyncio.Task[None]]
    metrics_http: HttpServer | None = None


async def start(config: EdgeConfig, *, reuse_port: bool = False) -> RunningEdge:
    """Open the spool, bind the port and start the background tasks; redirects are served at once."""
    try:
        codec = keys.load(config.key_path).codec()
    except keys.KeyFileError as exc:
        raise ConfigError(str(exc)) from None
    if not codec.key_ids:
        raise ConfigError(f"{config.key_path} holds no usable key: run `clickedge keys create`")
    secret = read_ingest_secret(config)
    spool = Spool(config.worker_spool, segment_bytes=config.spool_segment_bytes, max_bytes=config.spool_max_bytes)
    try:
        spool.open()
    except SpoolLockedError as exc:
        raise ConfigError(f"{exc}; give each edge process its own CLICKEDGE_SPOOL_DIR or --worker-index") from None
    except OSError as exc:
        # Not a configuration error: the disk may come back. Exit with a code the supervisor restarts.
        raise SpoolUnavailableError(f"cannot open the spool in {config.worker_spool}: {exc}") from None
    if spool.stats.truncated_bytes:
        log.warning("cut a torn record (%d bytes) off the spool's last segment", spool.stats.truncated_bytes)
    metrics = EdgeMetrics(restarts=restarts(), worker=config.worker_index)
    syncer = Syncer(spool, metrics, config.fsync)
    shipper = Shipper(
        spool,
        metrics,
        collector_url=config.collector_url,
        secret=secret,
        edge_name=f"{socket.gethostname()[:40]}-w{config.worker_index}",
        batch_size=config.batch_size,
        linger=config.batch_linger,
        dead_letter=config.worker_spool.parent / f"dead-letter-worker-{config.worker_index}.jsonl",
    )
    metrics.watch_spool(spool, lambda: shipper.oldest_unacked_us, shipper.dead_letter_max)
    handler = RedirectHandler(
        codec,
        spool,
        syncer,
        metrics,
        ClientIP(config.trusted_proxies),
        on_batch_ready=shipper.wake.set,
        batch_size=config.batch_size,
    )
    metrics.watch_ready(lambda: not handler.draining and spool.healthy)
    blocklist = BlocklistSync(
        collector_url=config.collector_url,
        secret=secret,
        path=config.blocklist_path,
        apply=lambda new: setattr(handler, "blocklist", new),
        current=lambda: handler.blocklist,
        interval=config.blocklist_poll,
        on_error=metrics.blocklist_errors.inc,
    )
    blocklist.load()  # before the first request: a list saved earlier is enforced while the collector is away
    metrics.watch_blocklist(lambda: handler.blocklist.entries, lambda: blocklist.checked_at)
    served: Handler = handler
    if config.access_log_sample > 0:
        served = SampledAccessLog(handler, config.access_log_sample)
    http = HttpServer(served, keepalive_timeout=config.keepalive_timeout, durability=ClickDurability(spool, syncer))
    metrics.watch_http(http.errors)
    metrics_http: HttpServer | None = None
    where = f"{config.host}:{config.port}"
    try:
        port = await http.listen(config.host, config.port, reuse_port=reuse_port)
        if config.metrics_port:
            # Each worker's own port, so Prometheus can scrape every worker (the edge port reaches any one).
            where = f"{config.host}:{config.metrics_port + config.worker_index}"
            metrics_http = HttpServer(MetricsEndpoint(handler), keepalive_timeout=config.keepalive_timeout)
            handler.metrics_here = False
            await metrics_http.listen(config.host, config.metrics_port + config.worker_index, reuse_port=False)
    except OSError as exc:
        await http.stop(0)
        spool.close()
        raise ConfigError(f"cannot listen on {where}: {exc.strerror}") from None
    running = RunningEdge(handler, spool, syncer, shipper, blocklist, http, port, set(), metrics_http)
    _spawn(running, syncer.run(), "spool-sync")
    _spawn(running, shipper.run(), "shipper")
    _spawn(running, blocklist.run(), "blocklist")
    _spawn(running, _count_backlog(spool), "count-backlog")
    return running


def _spawn(running: RunningEdge, coro: Coroutine[Any, Any, None], name: str) -> None:
    task = asyncio.create_task(coro, name=name)
    running.tasks.add(task)
    task.add_done_callback(running.tasks.discard)
    task.add_done_callback(_report_crash)


async def _count_backlog(spool: Spool) -> None:
    replayed = await asyncio.to_thread(spool.count_records, spool.backlog())
    if replayed:
        log.info("replaying %d clicks left unshipped by an earlier run", replayed)


async def serve(config: EdgeConfig, stop: asyncio.Event, *, reuse_port: bool = False) -> None:
    """Run one edge worker until ``stop`` is set, then drain it."""
    running = await start(config, reuse_port=reuse_port)
    log.info("edge worker %d listening on %s:%d", config.worker_index, config.host, running.port)
    await stop.wait()
    await shutdown(running, grace=config.drain_grace, timeout=config.shutdown_timeout)


async def shutdown(running: RunningEdge, *, grace: float, timeout: float) -> int:
    """Drain in order: not ready at once, keep serving for ``grace`` (the load balancer notices), stop
    accepting and finish in-flight requests, then ship what can be shipped within ``timeout``. What is
    left stays in the spool for the next start. Returns the clicks left unshipped."""
    running.handler.draining = True  # /readyz 503; answers say Connection: close, so clients reconnect elsewhere
    if grace > 0:
        log.info("draining: /readyz answers 503; serving for %.1fs more", grace)
        await asyncio.sleep(grace)
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    # Answers are written as soon as requests are read, so a quarter of the budget is plenty for clients
    # to read theirs; the rest is for shipping what is spooled.
    await running.http.stop(max(0.5, timeout / 4))
    for task in list(running.tasks):
        task.cancel()
    await asyncio.gather(*running.tasks, return_exceptions=True)
    await running.syncer.close()  # releases fsync=always waiters: nothing is served any more
    await running.blocklist.close()
    await running.shipper.drain(deadline)
    await running.shipper.close()
    left = running.spool.unacknowledged_records
    try:
        # Whatever is left must survive a power loss until the next start; but a stalled disk must not
        # hold the stop beyond its deadline (plus a second for this last step).
        await asyncio.wait_for(asyncio.to_thread(running.spool.sync), max(1.0, deadline - loop.time()))
    except (OSError, TimeoutError) as exc:
        log.error("final spool fsync failed: %r", exc)
    running.spool.close()
    if running.metrics_http is not None:  # scrapeable until here: the drain shows on the dashboards
        await running.metrics_http.stop(0.5)
    if left:
        log.warning("stopped with %d clicks still spooled; they ship at the next start", left)
    else:
        log.info("stopped; every click was shipped")
    return left


def _report_crash(task: asyncio.Task[None]) -> None:
    # The tasks catch what they can go on after (the shipper: any exception); what reaches here is fatal.
    if not task.cancelled() and task.exception() is not None:
        log.critical("background task %s crashed", task.get_name(), exc_info=task.exception())
        os._exit(70)  # the supervisor restarts the worker; the spool keeps every click meanwhile


async def run_worker(config: EdgeConfig) -> int:
    """The `clickedge edge` command with one worker: this process serves. ``clickedge.workers`` starts N of
    these, sharing the port (it sets REUSE_PORT_ENV for them)."""
    start_heartbeat()  # when supervised (by `up`, or by `edge --workers N` for its workers)
    stop = asyncio.Event()
    supervised = os.environ.get(REUSE_PORT_ENV) == "1"
    install_stop_handlers(stop, same_stop_seconds=SAME_STOP_SECONDS if supervised else 0.0)
    await serve(config, stop, reuse_port=supervised)
    return 0
