"""`clickedge edge --workers N`: N edge worker processes sharing one port with SO_REUSEPORT, supervised."""

from __future__ import annotations

import asyncio
import os
import sys
from collections.abc import Sequence

from clickedge.supervise import Child, Supervisor, check_port_free
from common.process import CONFIG_ERROR_EXIT, install_stop_handlers, start_heartbeat
from common.settings import ConfigError
from edge.config import EdgeConfig
from edge.main import REUSE_PORT_ENV, read_ingest_secret
from links import keys


async def run_workers(config: EdgeConfig, argv: Sequence[str]) -> int:
    """Start ``config.workers`` worker processes (each `clickedge edge --workers 1 --worker-index i` with the
    same options), restart any that dies or hangs, and stop them all together."""
    start_heartbeat()  # when `up` supervises this supervisor
    stop = asyncio.Event()
    # Check what every worker needs here, so a bad configuration stops start-up instead of a restart loop.
    try:
        keys.load(config.key_path)
    except keys.KeyFileError as exc:
        raise ConfigError(str(exc)) from None
    read_ingest_secret(config)
    # The workers share the port with SO_REUSEPORT, which would also let them share it silently with a
    # stranger already listening there: make sure nobody is.
    check_port_free(config.host, config.port)
    supervisor = Supervisor(watchdog_timeout=config.watchdog_timeout)
    install_stop_handlers(stop, on_force=supervisor.kill_all)
    env = {**os.environ, REUSE_PORT_ENV: "1"}
    for i in range(config.workers):
        # Flags win over the environment, so the worker sees the same options with --workers 1, and its
        # own index, which gives it its own spool.
        argv_worker = [
            sys.executable,
            "-m",
            "clickedge",
            "edge",
            *argv,
            "--workers",
            "1",
            "--worker-index",
            str(i),
        ]
        await supervisor.start(Child(f"edge-worker-{i}", argv_worker, env))
    stopped = asyncio.create_task(stop.wait())
    failed = asyncio.create_task(supervisor.failed.wait())
    await asyncio.wait({stopped, failed}, return_when=asyncio.FIRST_COMPLETED)
    stopped.cancel()
    failed.cancel()
    codes = await supervisor.stop_all(config.drain_grace + config.shutdown_timeout + 5, together=True)
    if supervisor.failed.is_set() and not stop.is_set():
        return CONFIG_ERROR_EXIT
    return 0 if all(code == 0 for code in codes) else 1
