"""Ships buffered clicks to the collector in batches over keep-alive HTTP.

A batch leaves when it is full or when its oldest click has waited ``linger`` seconds. Clicks stay in the
buffer until the collector answers 200 (after its COMMIT); a failed send is retried with backoff and
jitter, with the same event ids, so a lost reply cannot double-count.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import time

import aiohttp
import orjson

from clickedge.events import encode_batch
from edge.buffer import ClickBuffer
from edge.metrics import EdgeMetrics

log = logging.getLogger("clickedge.edge.shipper")

BACKOFF_START = 0.1
BACKOFF_CAP = 5.0
REQUEST_TIMEOUT = 30.0


class RejectedBatch(Exception):
    """The collector refused the batch as malformed (4xx but 401/408/429): resending will not help."""


class Shipper:
    def __init__(
        self,
        buffer: ClickBuffer,
        metrics: EdgeMetrics,
        *,
        collector_url: str,
        secret: str,
        edge_name: str,
        batch_size: int,
        linger: float,
    ) -> None:
        self._buffer = buffer
        self._metrics = metrics
        self._url = collector_url + "/v1/clicks"
        self._headers = {"Authorization": f"Bearer {secret}", "Content-Type": "application/json"}
        self._edge = edge_name
        self.batch_size = batch_size
        self._linger = linger
        self.wake = asyncio.Event()
        self._session: aiohttp.ClientSession | None = None

    async def run(self) -> None:
        """Ship until cancelled."""
        backoff = BACKOFF_START
        while True:
            if len(self._buffer) < self.batch_size:
                self.wake.clear()
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self.wake.wait(), self._linger)
            if not self._buffer:
                continue
            if await self.ship_once():
                backoff = BACKOFF_START
            else:
                await asyncio.sleep(backoff * random.uniform(0.5, 1.0))
                backoff = min(backoff * 2, BACKOFF_CAP)

    async def drain(self, deadline: float) -> int:
        """Ship what is buffered until empty or until ``deadline`` (loop time); returns clicks left."""
        loop = asyncio.get_running_loop()
        backoff = BACKOFF_START
        while self._buffer and loop.time() < deadline:
            try:
                ok = await asyncio.wait_for(self.ship_once(), deadline - loop.time())
            except TimeoutError:
                break
            if not ok:
                await asyncio.sleep(min(backoff, max(0.0, deadline - loop.time())))
                backoff = min(backoff * 2, BACKOFF_CAP)
        return len(self._buffer)

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None

    def _client(self) -> aiohttp.ClientSession:
        if self._session is None or self._session.closed:
            self._session = aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=REQUEST_TIMEOUT))
        return self._session

    async def ship_once(self) -> bool:
        """Send the oldest batch; True when the buffer moved forward."""
        rows = self._buffer.peek(self.batch_size)
        if not rows:
            return True
        body = orjson.dumps(encode_batch(self._edge, rows))
        started = time.perf_counter()
        try:
            await self._post(body)
        except RejectedBatch as exc:
            # Retrying cannot make a malformed batch acceptable; keep the pipeline moving and say so.
            self._metrics.batch_rejected.inc()
            self._metrics.dropped.inc(len(rows))
            log.error("collector rejected a batch of %d clicks, dropping it: %s", len(rows), exc)
            self._buffer.ack(len(rows))
            return True
        except (aiohttp.ClientError, OSError, TimeoutError) as exc:
            self._metrics.batch_failed.inc()
            log.warning("shipping %d clicks failed, will retry: %r", len(rows), exc)
            return False
        self._metrics.ship_seconds.observe(time.perf_counter() - started)
        self._metrics.batch_shipped.inc()
        self._metrics.clicks_shipped.inc(len(rows))
        self._buffer.ack(len(rows))
        self._metrics.buffered.set(len(self._buffer))
        return True

    async def _post(self, body: bytes) -> None:
        async with self._client().post(self._url, data=body, headers=self._headers) as resp:
            if resp.status == 200:
                await resp.read()
                return
            detail = (await resp.text())[:500]
            if 400 <= resp.status < 500 and resp.status not in (401, 408, 429):
                raise RejectedBatch(f"HTTP {resp.status}: {detail}")
            raise aiohttp.ClientResponseError(
                resp.request_info, resp.history, status=resp.status, message=detail
            )
