"""Ships spooled clicks to the collector in batches over keep-alive HTTP.

A batch is read from the spool's acknowledged position when it is full or its clicks have waited
``linger`` seconds; the position moves only after the collector's 200 (sent after its COMMIT). So a busy
edge sends full batches, one after another while a backlog lasts, and a quiet one sends what a linger
gathered. A batch is the spool's own records, sent as they are (``application/x-clickedge-spool``,
common/frames.py): the edge neither decodes nor re-encodes a click, and the collector checks every record's
CRC. Reading the spool happens in a worker thread: the event loop that answers redirects only hands over a
snapshot of the spool's sizes and later moves the acknowledged position. What to do after a failure depends
on its class:

- connection errors, timeouts, 408, 425, 429 and 5xx: retry the same batch (same event ids, so a reply lost
  after COMMIT cannot double-count) with exponential backoff, jitter and a cap;
- 401 and 403: our credentials are wrong; retry the same way and say so loudly, since nothing can move
  until an operator fixes them;
- 413: the batch is larger than something on the way takes: send fewer clicks per batch (halving down to
  one; the size grows back after successes); a single click refused as too large is dead-lettered;
- 400 with the collector's ``Clickedge-Batch-Rejected`` header: the collector will never take this batch.
  It goes to the dead-letter file, counted and logged, and the spool moves on;
- any other 4xx (404 and 405 above all: a wrong collector URL, or a proxy answering for it): a
  configuration error. Nothing is dead-lettered; the batch is retried with backoff, counted
  (``clickedge_edge_batches_total{outcome="misdirected"}``) and logged, for an alert to fire.

The dead-letter file counts against the spool's size cap and may use at most a quarter of it: when it is
full, batches stay in the spool (retried with backoff, logged) rather than be dropped.

Memory stays bounded by one batch, whatever the collector does: the backlog waits on disk. The loop
always yields to the event loop between batches, waits for new clicks when a read finds nothing complete,
and survives an unexpected exception (counted, logged, backed off).
"""

from __future__ import annotations

import asyncio
import contextlib
import io
import logging
import os
import random
import time
from dataclasses import dataclass
from pathlib import Path

import aiohttp
import orjson

from common.events import (
    BATCH_REJECTED_HEADER,
    EDGE_HEADER,
    SPOOL_CONTENT_TYPE,
    payload_clicked_at_us,
    spooled_as_json,
)
from common.frames import HEADER_SIZE
from common.logs import Throttled
from edge.metrics import EdgeMetrics
from edge.spool import Frames, Spool, SpoolView

log = logging.getLogger("clickedge.edge.shipper")
# Each kind of trouble logs at most once per 10 s, each on its own schedule.
_crash_log = Throttled(log)
_misdirected_log = Throttled(log)
_dead_letter_full_log = Throttled(log)

BACKOFF_START = 0.1
BACKOFF_CAP = 5.0
REQUEST_TIMEOUT = 30.0
RETRYABLE_4XX = frozenset({408, 425, 429})
AUTH_4XX = frozenset({401, 403})
TOO_LARGE = 413
# Well under the collector's default 16 MiB body limit even for 10,000 long user agents.
MAX_BATCH_BYTES = 4 << 20
MAX_REPLY_BYTES = 64 << 10
DEAD_LETTER_SHARE = 4  # the dead-letter file may use 1/DEAD_LETTER_SHARE of the spool's cap
_jitter = random.Random()  # the shipper's own: it does not disturb (or depend on) the process's global state


@dataclass(frozen=True, slots=True)
class Outcome:
    moved: bool  # the spool moved forward (shipped or dead-lettered)
    retry: bool  # worth trying the same batch again later (after a backoff)


MOVED = Outcome(moved=True, retry=False)
RETRY = Outcome(moved=False, retry=True)
NOTHING_YET = Outcome(moved=False, retry=False)  # no complete record to ship: wait for more


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
        self._headers = {
            "Authorization": f"Bearer {secret}",
            "Content-Type": SPOOL_CONTENT_TYPE,
            EDGE_HEADER: edge_name,
        }
        self._edge = edge_name
        self.batch_size = batch_size
        self._limit = batch_size  # clicks per batch now: smaller after a 413
        self._linger = linger
        self._dead_letter = dead_letter
        self.dead_letter_max = spool.max_bytes // DEAD_LETTER_SHARE
        self.wake = asyncio.Event()
        self._session: aiohttp.ClientSession | None = None
        self.oldest_unacked_us: int | None = None
        self._count_dead_letter()

    async def run(self) -> None:
        """Ship until cancelled."""
        backoff = BACKOFF_START
        while True:
            if self._spool.unacknowledged_bytes == 0 or not self.wake.is_set():
                self.wake.clear()
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self.wake.wait(), self._linger)
            else:
                await asyncio.sleep(0)  # a backlog: go on at once, but let the redirects waiting go first
            if self._spool.empty:
                self.oldest_unacked_us = None
                continue
            try:
                outcome = await self.ship_once()
            except Exception:  # the task's boundary: a bug here must stop neither shipping nor the worker
                self._metrics.ship_errors.inc()
                _crash_log.log(logging.ERROR, "shipping failed unexpectedly; will retry", exc_info=True)
                outcome = RETRY
            if outcome.moved:
                backoff = BACKOFF_START
                # A full batch waiting (a backlog): go on at once. Less: it waits for more, or its linger.
                if self._spool.unacknowledged_records >= self._limit:
                    self.wake.set()
                else:
                    self.wake.clear()
            elif outcome.retry:
                self._metrics.ship_retries.inc()
                await asyncio.sleep(backoff * _jitter.uniform(0.5, 1.0))
                backoff = min(backoff * 2, BACKOFF_CAP)
            else:
                self.wake.clear()  # nothing complete to ship: wait for new clicks, or the linger

    async def drain(self, deadline: float) -> None:
        """Ship what is spooled until it is all acknowledged or ``deadline`` (loop time) passes."""
        loop = asyncio.get_running_loop()
        backoff = BACKOFF_START
        while not self._spool.empty and loop.time() < deadline:
            try:
                outcome = await asyncio.wait_for(self.ship_once(), deadline - loop.time())
            except TimeoutError:
                return
            except Exception:  # as in run(): what is left stays in the spool for the next start
                self._metrics.ship_errors.inc()
                _crash_log.log(logging.ERROR, "shipping failed unexpectedly while draining", exc_info=True)
                outcome = RETRY
            if outcome == NOTHING_YET:
                return  # what is left is not a complete record; the next start deals with it
            if not outcome.moved:
                await asyncio.sleep(min(backoff, max(0.0, deadline - loop.time())))
                backoff = min(backoff * 2, BACKOFF_CAP)

    async def ship_once(self) -> Outcome:
        """Send the oldest unacknowledged batch."""
        view = self._spool.snapshot()
        batch = await asyncio.to_thread(self._read, view)
        if not batch.count:
            if batch.end > view.acknowledged:
                self._spool.ack(batch.end, 0, batch.corrupt)  # only skipped (corrupt) bytes: move past them
                return MOVED
            return NOTHING_YET
        body = batch.body
        first = int.from_bytes(body[2:6], "big")  # the first record's payload length (common/frames.py)
        self.oldest_unacked_us = payload_clicked_at_us(body[HEADER_SIZE : HEADER_SIZE + first])
        started = time.perf_counter()
        try:
            # No redirects: the Authorization header must go to the configured collector and nowhere else. A
            # BytesIO is sent 64 KiB at a time, yielding between pieces: redirects are answered meanwhile.
            data = io.BytesIO(body)
            async with self._client().post(self._url, data=data, headers=self._headers, allow_redirects=False) as r:
                status = r.status
                rejected = r.headers.get(BATCH_REJECTED_HEADER) is not None
                reply = await r.content.read(MAX_REPLY_BYTES)  # whatever the collector sends, a bounded read
        except (aiohttp.ClientError, OSError, TimeoutError) as exc:
            self._metrics.batch_failed.inc()
            # The class and message only: some aiohttp errors' repr include the request headers.
            log.warning("shipping %d clicks failed, will retry: %s: %s", batch.count, type(exc).__name__, exc)
            return RETRY
        if status == 200:
            self._acknowledge(batch, reply, time.perf_counter() - started)
            return MOVED
        self._metrics.batch_failed.inc()
        detail = reply[:300].decode(errors="replace")
        count = batch.count
        if status >= 500 or status in RETRYABLE_4XX:
            log.warning("collector answered %d for %d clicks, will retry: %s", status, count, detail)
            return RETRY
        if status in AUTH_4XX:
            log.error("collector refused our credentials (%d): check CLICKEDGE_INGEST_SECRET; retrying", status)
            return RETRY
        if status == TOO_LARGE and count > 1:
            self._limit = max(1, count // 2)
            log.warning("a batch of %d clicks was too large (413); sending %d at a time", count, self._limit)
            return RETRY
        if (status == 400 and rejected) or status == TOO_LARGE:
            return await self._dead_letter_batch(batch, body, status, detail)
        self._metrics.batch_misdirected.inc()
        _misdirected_log.log(
            logging.ERROR,
            "%s answered %d, which the collector never does for a batch: check CLICKEDGE_COLLECTOR_URL "
            "(and any proxy in front of the collector); the batch stays in the spool and is retried: %s",
            self._url,
            status,
            detail[:100],
        )
        return RETRY

    def _read(self, view: SpoolView) -> Frames:
        """The next batch, as the spool's records (in a worker thread: it reads files)."""
        return self._spool.read_frames(view, self._limit, max_bytes=MAX_BATCH_BYTES)

    def _acknowledge(self, batch: Frames, reply: bytes, seconds: float) -> None:
        self._spool.ack(batch.end, batch.count, batch.corrupt)
        if self._spool.ledger_error is not None:
            log.warning(
                "could not record the acknowledged position (%s); a restart would resend some clicks, "
                "which the collector drops as duplicates",
                self._spool.ledger_error,
            )
            self._spool.ledger_error = None
        self.oldest_unacked_us = None
        self._limit = min(self.batch_size, self._limit * 2)  # after a 413: grow back, a step at a time
        metrics = self._metrics
        metrics.ship_seconds.observe(seconds)
        metrics.batch_shipped.inc()
        metrics.clicks_shipped.inc(batch.count)
        try:
            duplicates = int(orjson.loads(reply).get("duplicates", 0))
        except (orjson.JSONDecodeError, AttributeError, TypeError, ValueError):
            duplicates = 0
        if duplicates:
            metrics.clicks_duplicate.inc(duplicates)

    async def _dead_letter_batch(self, batch: Frames, body: bytes, status: int, detail: str) -> Outcome:
        # Kept as the JSON batch (common/events.py), which a person can read and send again with curl; made in
        # a worker thread, as the batch was read (up to MAX_BATCH_CLICKS records).
        doc = await asyncio.to_thread(spooled_as_json, self._edge, body)
        line = b'{"at":%d,"status":%d,"error":%b,"batch":%b}\n' % (int(time.time()), status, orjson.dumps(detail), doc)
        self._count_dead_letter()  # an operator may have moved it away since
        if self._spool.external_bytes + len(line) > self.dead_letter_max:
            _dead_letter_full_log.log(
                logging.ERROR,
                "the dead-letter file %s is full (%d of %d bytes, a quarter of CLICKEDGE_SPOOL_MAX_BYTES): a "
                "batch the collector refused (%d: %s) stays in the spool; move the file away once read",
                self._dead_letter,
                self._spool.external_bytes,
                self.dead_letter_max,
                status,
                detail[:100],
            )
            return RETRY
        try:
            await asyncio.to_thread(self._append_dead_letter, line)  # it fsyncs: not on the event loop
        except OSError as exc:
            # The batch stays in the spool (nothing is lost) and is tried again, dead letter and all.
            log.error(
                "cannot write the dead-letter file %s (%s); keeping the batch in the spool", self._dead_letter, exc
            )
            return RETRY
        finally:
            self._count_dead_letter()
        self._spool.ack(batch.end, batch.count, batch.corrupt)
        self._metrics.batch_dead_lettered.inc()
        self._metrics.clicks_dead_lettered.inc(batch.count)
        log.error(
            "collector refused a batch of %d clicks as malformed (%d: %s); kept in %s",
            batch.count,
            status,
            detail,
            self._dead_letter,
        )
        return MOVED

    def _append_dead_letter(self, line: bytes) -> None:
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

    def _count_dead_letter(self) -> None:
        """What the dead-letter file holds counts against the spool's cap (an operator may move it away)."""
        try:
            self._spool.external_bytes = self._dead_letter.stat().st_size
        except OSError:
            self._spool.external_bytes = 0

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None

    def _client(self) -> aiohttp.ClientSession:
        if self._session is None or self._session.closed:
            self._session = aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=REQUEST_TIMEOUT))
        return self._session
