"""The collector as a process: graceful drain on SIGTERM."""

from __future__ import annotations

import asyncio
import signal

import aiohttp

from tests.conftest import eventually
from tests.faults.harness import CollectorProc, wait_http


async def test_sigterm_drains_then_exits_0(database_url: str) -> None:
    proc = CollectorProc(database_url)
    proc.args += ["--drain-grace", "3"]
    await proc.start()
    await wait_http(f"{proc.url}/readyz")
    assert proc.proc is not None
    proc.proc.send_signal(signal.SIGTERM)

    async def not_ready_but_serving() -> bool:
        async with (
            aiohttp.ClientSession() as http,
            http.get(f"{proc.url}/readyz") as ready,
            http.get(f"{proc.url}/healthz") as health,
        ):
            return ready.status == 503 and health.status == 200

    await eventually(not_ready_but_serving, timeout=2.5)  # within the grace period
    async with asyncio.timeout(30):
        assert await proc.proc.wait() == 0
