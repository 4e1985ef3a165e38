"""Collector process lifecycle: serve until SIGTERM, then stop accepting and finish in-flight batches."""

from __future__ import annotations

import asyncio
import logging

from aiohttp import web

from collector.app import DRAINING, create_app
from collector.config import CollectorConfig
from collector.metrics import CollectorMetrics
from common.process import install_stop_handlers, restarts, start_heartbeat
from common.settings import ConfigError

log = logging.getLogger("clickedge.collector")


async def run(config: CollectorConfig) -> int:
    start_heartbeat()  # when `up` supervises it
    stop = asyncio.Event()
    install_stop_handlers(stop)
    app = create_app(config, CollectorMetrics(restarts=restarts()))
    runner = web.AppRunner(app, handle_signals=False, shutdown_timeout=config.shutdown_timeout, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, config.host, config.port, backlog=1024)
    try:
        await site.start()
    except OSError as exc:
        await runner.cleanup()
        raise ConfigError(f"cannot listen on {config.host}:{config.port}: {exc.strerror}") from None
    log.info("collector listening on %s:%d", config.host, config.port)
    await stop.wait()
    # Not ready at once, so a load balancer stops sending; keep serving through the grace period; then stop
    # accepting and let in-flight batches finish (each answers only after its COMMIT or its rollback).
    app[DRAINING].set()
    if config.drain_grace > 0:
        log.info("draining: /readyz answers 503; serving for %.1fs more", config.drain_grace)
        await asyncio.sleep(config.drain_grace)
    await runner.cleanup()
    log.info("collector stopped")
    return 0
