"""Ships spooled clicks to the collector in batches over keep-alive HTTP.

A batch is read from the spool's acknowledged position when it is full or its clicks have waited
``linger`` seconds; the position moves only after the collector's 200 (sent after its COMMIT). What to do
after a failure depends on its class:

- connection errors, timeouts, 408, 429 and 5xx: retry the same batch (same event ids, so a reply lost
  after COMMIT cannot double-count) with exponential backoff, jitter and a cap;
- 401 and 403: our credentials are wrong; retry the same way and say so loudly, since nothing can move
  until an operator fixes them;
- any other 4xx: the collector will never take this batch. It goes to the dead-letter file, counted and
  logged, and the spool moves on.

Memory stays bounded by one batch, whatever the collector does: the backlog waits on disk.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import random
import time
from dataclasses import dataclass
from pathlib import Path

import aiohttp
import orjson

from clickedge.events import encode_spooled_batch, payload_clicked_at_us
from edge.metrics import EdgeMetrics
from edge.spool import Batch, Spool

log = logging.getLogger("clickedge.edge.shipper")

BACKOFF_START = 0.1
BACKOFF_CAP = 5.0
REQUEST_TIMEOUT = 30.0
RETRYABLE_4XX = frozenset({408, 425, 429})
AUTH_4XX = frozenset({401, 403})
# Well under the collector's default 16 MiB body limit even for 10,000 long user agents.
MAX_BATCH_BYTES = 4 << 20
MAX_REPLY_BYTES = 64 << 10
_jitter = random.Random()  # the shipper's own: it does not disturb (or depend on) the process's global state


@dataclass(frozen=True, slots=True)
class Outcome:
    moved: bool  # the spool moved forward (shipped or dead-lettered)
    retry: bool  # worth trying the same batch again later


class Shipper:
    def __init__(
        self,
        spool: Spool,
        metrics: EdgeMetrics,
        *,
        collector_url: str,
        secret: str,
        edge_name: str,
        batch_size: int,
        linger: float,
        dead_letter: Path,
    ) -> None:
        self._spool = spool
        self._metrics = metrics
        self._url = collector_url + "/v1/clicks"
        self._headers = {"Authorization": f"Bearer {secret}", "Content-Type": "application/json"}
        self._edge = edge_name
        self.batch_size = batch_size
        self._linger = linger
        self._dead_letter = dead_letter
        self.wake = asyncio.Event()
        self._session: aiohttp.ClientSession | None = None
        self.oldest_unacked_us: int | None = None

    async def run(self) -> None:
        """Ship until cancelled."""
        backoff = BACKOFF_START
        while True:
            if self._spool.unacknowledged_bytes == 0 or not self.wake.is_set():
                self.wake.clear()
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self.wake.wait(), self._linger)
            if self._spool.empty:
                self.oldest_unacked_us = None
                continue
            outcome = await self.ship_once()
            if outcome.moved:
                backoff = BACKOFF_START
                if self._spool.unacknowledged_bytes > 0:
                    self.wake.set()  # a backlog: keep going without lingering
            elif outcome.retry:
                self._metrics.ship_retries.inc()
                await asyncio.sleep(backoff * _jitter.uniform(0.5, 1.0))
                backoff = min(backoff * 2, BACKOFF_CAP)

    async def drain(self, deadline: float) -> None:
        """Ship what is spooled until it is all acknowledged or ``deadline`` (loop time) passes."""
        loop = asyncio.get_running_loop()
        backoff = BACKOFF_START
        while not self._spool.empty and loop.time() < deadline:
            try:
                outcome = await asyncio.wait_for(self.ship_once(), deadline - loop.time())
            except TimeoutError:
                return
            if not outcome.moved:
                await asyncio.sleep(min(backoff, max(0.0, deadline - loop.time())))
                backoff = min(backoff * 2, BACKOFF_CAP)

    async def ship_once(self) -> Outcome:
        """Send the oldest unacknowledged batch."""
        batch = self._spool.read(self.batch_size, max_bytes=MAX_BATCH_BYTES)
        if not batch.records:
            self._spool.ack(batch.end, 0, batch.corrupt)  # only skipped (corrupt) bytes: move past them
            return Outcome(moved=True, retry=False)
        self.oldest_unacked_us = payload_clicked_at_us(batch.records[0][1])
        body = encode_spooled_batch(self._edge, batch.records)
        started = time.perf_counter()
        try:
            # No redirects: the Authorization header must go to the configured collector and nowhere else.
            async with self._client().post(self._url, data=body, headers=self._headers, allow_redirects=False) as r:
                status = r.status
                reply = await r.content.read(MAX_REPLY_BYTES)  # whatever the collector sends, a bounded read
        except (aiohttp.ClientError, OSError, TimeoutError) as exc:
            self._metrics.batch_failed.inc()
            # The class and message only: some aiohttp errors' repr include the request headers.
            log.warning("shipping %d clicks failed, will retry: %s: %s", len(batch.records), type(exc).__name__, exc)
            return Outcome(moved=False, retry=True)
        if status == 200:
            self._acknowledge(batch, reply, time.perf_counter() - started)
            return Outcome(moved=True, retry=False)
        self._metrics.batch_failed.inc()
        detail = reply[:300].decode(errors="replace")
        if status >= 500 or status in RETRYABLE_4XX:
            log.warning("collector answered %d for %d clicks, will retry: %s", status, len(batch.records), detail)
            return Outcome(moved=False, retry=True)
        if status in AUTH_4XX:
            log.error("collector refused our credentials (%d): check CLICKEDGE_INGEST_SECRET; retrying", status)
            return Outcome(moved=False, retry=True)
        return self._dead_letter_batch(batch, body, status, detail)

    def _acknowledge(self, batch: Batch, reply: bytes, seconds: float) -> None:
        self._spool.ack(batch.end, len(batch.records), batch.corrupt)
        if self._spool.ledger_error is not None:
            log.warning(
                "could not record the acknowledged position (%s); a restart would resend some clicks, "
                "which the collector drops as duplicates",
                self._spool.ledger_error,
            )
            self._spool.ledger_error = None
        self.oldest_unacked_us = None
        metrics = self._metrics
        metrics.ship_seconds.observe(seconds)
        metrics.batch_shipped.inc()
        metrics.clicks_shipped.inc(len(batch.records))
        try:
            duplicates = int(orjson.loads(reply).get("duplicates", 0))
        except (orjson.JSONDecodeError, AttributeError, TypeError, ValueError):
            duplicates = 0
        if duplicates:
            metrics.clicks_duplicate.inc(duplicates)

    def _dead_letter_batch(self, batch: Batch, body: bytes, status: int, detail: str) -> Outcome:
        line = b'{"at":%d,"status":%d,"error":%b,"batch":%b}\n' % (int(time.time()), status, orjson.dumps(detail), body)
        try:
            fd = os.open(self._dead_letter, os.O_WRONLY | os.O_CREAT | os.O_APPEND | os.O_CLOEXEC, 0o600)
            try:
                size = os.fstat(fd).st_size
                view = memoryview(line)
                while view:
                    view = view[os.write(fd, view) :]
                os.fsync(fd)
            except OSError:
                with contextlib.suppress(OSError):
                    os.ftruncate(fd, size)  # no half line: the next batch's line would be corrupt too
                raise
            finally:
                os.close(fd)
        except OSError as exc:
            # The batch stays in the spool (nothing is lost) and is tried again, dead letter and all.
            log.error(
                "cannot write the dead-letter file %s (%s); keeping the batch in the spool", self._dead_letter, exc
            )
            return Outcome(moved=False, retry=True)
        self._spool.ack(batch.end, len(batch.records), batch.corrupt)
        self._metrics.batch_dead_lettered.inc()
        self._metrics.clicks_dead_lettered.inc(len(batch.records))
        log.error(
            "collector refused a batch of %d clicks as malformed (%d: %s); kept in %s",
            len(batch.records),
            status,
            detail,
            self._dead_letter,
        )
        return Outcome(moved=True, retry=False)

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None

    def _client(self) -> aiohttp.ClientSession:
        if self._session is None or self._session.closed:
            self._session = aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=REQUEST_TIMEOUT))
        return self._session
