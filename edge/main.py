"""Edge process lifecycle: start, serve, drain in order on SIGTERM; or supervise N workers."""

from __future__ import annotations

import asyncio
import logging
import os
import socket
import sys
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass

from aiohttp import web

from clickedge.settings import ConfigError
from clickedge.supervise import Child, Supervisor, install_stop_handlers
from edge import keys
from edge.buffer import ClickBuffer
from edge.clientip import ClientIP
from edge.config import EdgeConfig
from edge.metrics import EdgeMetrics
from edge.server import Edge, make_server
from edge.shipper import Shipper

log = logging.getLogger("clickedge.edge")


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
    edge: Edge
    shipper: Shipper
    runner: web.ServerRunner
    port: int


async def start(config: EdgeConfig, *, reuse_port: bool = True) -> RunningEdge:
    try:
        codec = keys.load(config.key_path).codec()
    except keys.KeyFileError as exc:
        raise ConfigError(str(exc)) from None
    if not codec.key_ids:
        raise ConfigError(f"{config.key_path} holds no usable key: run `clickedge keys create`")
    metrics = EdgeMetrics()
    buffer = ClickBuffer(config.buffer_clicks)
    shipper = Shipper(
        buffer,
        metrics,
        collector_url=config.collector_url,
        secret=read_ingest_secret(config),
        edge_name=f"{socket.gethostname()[:40]}-{os.getpid()}",
        batch_size=config.batch_size,
        linger=config.batch_linger,
    )
    edge = Edge(
        codec,
        buffer,
        metrics,
        ClientIP(config.trusted_proxies),
        on_batch_ready=shipper.wake.set,
        batch_size=config.batch_size,
    )
    runner = web.ServerRunner(
        make_server(edge), handle_signals=False, shutdown_timeout=config.shutdown_timeout
    )
    await runner.setup()
    site = web.TCPSite(runner, config.host, config.port, reuse_port=reuse_port, backlog=2048)
    try:
        await site.start()
    except OSError as exc:
        await runner.cleanup()
        raise ConfigError(f"cannot listen on {config.host}:{config.port}: {exc.strerror}") from None
    port = int(runner.addresses[0][1])
    return RunningEdge(edge, shipper, runner, port)


async def serve(
    config: EdgeConfig,
    stop: asyncio.Event,
    on_ready: Callable[[RunningEdge], Awaitable[None] | None] | None = None,
) -> int:
    """Run one edge worker until ``stop`` is set, then drain: returns the number of clicks left unshipped."""
    running = await start(config)
    ship_task = asyncio.create_task(running.shipper.run(), name="shipper")
    ship_task.add_done_callback(_report_crash)
    log.info("edge listening on %s:%d (pid %d)", config.host, running.port, os.getpid())
    if on_ready is not None:
        result = on_ready(running)
        if result is not None:
            await result
    await stop.wait()
    return await shutdown(running, ship_task, config.shutdown_timeout)


async def shutdown(running: RunningEdge, ship_task: asyncio.Task[None], timeout: float) -> int:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    running.edge.draining = True
    # Stop accepting and let in-flight redirects finish; only then is the buffer complete.
    await running.runner.cleanup()
    ship_task.cancel()
    await asyncio.gather(ship_task, return_exceptions=True)
    left = await running.shipper.drain(deadline)
    await running.shipper.close()
    if left:
        log.error("stopped with %d clicks not acknowledged by the collector", left)
    else:
        log.info("stopped; every click was shipped")
    return left


def _report_crash(task: asyncio.Task[None]) -> None:
    if not task.cancelled() and task.exception() is not None:
        log.critical("shipper crashed", exc_info=task.exception())
        os._exit(70)  # let the supervisor restart the worker rather than answer without shipping


async def run(config: EdgeConfig, argv: Sequence[str]) -> int:
    """The `clickedge edge` command: one worker in this process, or N supervised worker processes."""
    stop = asyncio.Event()
    install_stop_handlers(stop)
    if config.workers == 1:
        left = await serve(config, stop)
        return 0 if left == 0 else 1
    # Check what every worker needs here, so a bad configuration stops start-up instead of a restart loop.
    try:
        keys.load(config.key_path)
    except keys.KeyFileError as exc:
        raise ConfigError(str(exc)) from None
    read_ingest_secret(config)
    supervisor = Supervisor()
    for i in range(config.workers):
        # Flags win over the environment, so the worker sees the same options with --workers 1.
        argv_worker = [sys.executable, "-m", "clickedge", "edge", *argv, "--workers", "1"]
        await supervisor.start(Child(f"edge-worker-{i}", argv_worker))
    await stop.wait()
    codes = await supervisor.stop_all(config.shutdown_timeout + 5)
    return 0 if all(code == 0 for code in codes) else 1
