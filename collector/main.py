"""Collector process lifecycle: serve until SIGTERM, then stop accepting and finish in-flight batches."""

from __future__ import annotations

import asyncio
import logging

from aiohttp import web

from clickedge.settings import ConfigError
from clickedge.supervise import install_stop_handlers
from collector.app import create_app
from collector.config import CollectorConfig

log = logging.getLogger("clickedge.collector")
SHUTDOWN_TIMEOUT = 30.0


async def run(config: CollectorConfig) -> int:
    stop = asyncio.Event()
    install_stop_handlers(stop)
    runner = web.AppRunner(
        create_app(config), handle_signals=False, shutdown_timeout=SHUTDOWN_TIMEOUT, access_log=None
    )
    await runner.setup()
    site = web.TCPSite(runner, config.host, config.port, backlog=1024)
    try:
        await site.start()
    except OSError as exc:
        await runner.cleanup()
        raise ConfigError(f"cannot listen on {config.host}:{config.port}: {exc.strerror}") from None
    log.info("collector listening on %s:%d", config.host, config.port)
    await stop.wait()
    await runner.cleanup()
    log.info("collector stopped")
    return 0
