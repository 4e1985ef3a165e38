"""Group fsync of the spool: on a timer, or for waiting redirects in ``always`` mode.

fdatasync runs in a worker thread so the event loop keeps answering redirects meanwhile; every click
written before a sync started is covered by it, so one fsync serves all the clicks waiting at once.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time

from edge.metrics import EdgeMetrics
from edge.spool import Spool

log = logging.getLogger("clickedge.edge.spool")
PROBE_INTERVAL = 0.5  # how often, in always mode, a refusing spool is checked for room


class Syncer:
    def __init__(self, spool: Spool, metrics: EdgeMetrics, interval: float | None) -> None:
        self._spool = spool
        self._metrics = metrics
        self.always = interval is None
        self._interval = interval or 0.0
        self._waiters: list[asyncio.Future[None]] = []
        self._wanted = asyncio.Event()

    async def wait(self) -> None:
        """Return once everything written so far is on disk (or the attempt failed and was counted)."""
        future = asyncio.get_running_loop().create_future()
        self._waiters.append(future)
        self._wanted.set()
        await future

    async def run(self) -> None:
        while True:
            if self.always:
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._wanted.wait(), PROBE_INTERVAL)
                self._wanted.clear()
            else:
                await asyncio.sleep(self._interval)
            await self.sync_once()
            if not self._spool.healthy and self._spool.probe():
                log.info("spool accepts clicks again")

    async def sync_once(self) -> None:
        waiters, self._waiters = self._waiters, []
        if self._spool.needs_sync:
            fds, records = self._spool.sync_targets()
            started = time.perf_counter()
            ok = True
            try:
                await asyncio.get_running_loop().run_in_executor(None, self._spool.sync_fds, fds)
            except OSError as exc:
                ok = False
                log.error("spool fsync failed (%s); continuing in a new segment", exc)
            self._spool.sync_done(fds, ok, records)
            self._metrics.fsync_seconds.observe(time.perf_counter() - started)
        for future in waiters:
            if not future.done():
                future.set_result(None)

    async def close(self) -> None:
        """A last sync, then release anyone still waiting."""
        with contextlib.suppress(OSError):
            await self.sync_once()
