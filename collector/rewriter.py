"""The collector's rewrite endpoint: the sender library (links.rewrite, links.keys) plus registration.

A campaign's message is prepared once and cached (by its content) so that each recipient's rewrite only
mints; its links are registered in PostgreSQL the first time, and each recipient is recorded once.

Preparing runs in tokenizer worker processes (collector/tokenizer.py), one message at a time each, with a
deadline counted from when a worker takes the message: the collector's event loop also ingests clicks,
and a hostile message must not hold it or anyone else's message. A message past its deadline costs only
its own worker, which is killed and replaced; messages waiting for a worker wait in a bounded queue.
Workers are started on first use and spoken to over pipes, so starting and killing one never blocks the
event loop.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import logging
import pickle
import sys
from collections import OrderedDict
from pathlib import Path
from typing import Any

import asyncpg

from collector import campaigns, sending, tokenizer
from links import keys
from links.rewrite import PreparedMessage, RewriteError
from links.token import TokenCodec

CACHE_SIZE = 64
MAX_MESSAGE_CHARS = 1 << 20
PREPARE_TIMEOUT = 10.0
START_TIMEOUT = 30.0  # a worker's imports, on a busy machine

log = logging.getLogger("clickedge.collector.rewrite")


class RewriteBusy(Exception):
    """Every tokenizer worker is busy and the queue is full: retry later (HTTP 503)."""


class _Worker:
    """One tokenizer process; it is given one message at a time."""

    def __init__(self, proc: asyncio.subprocess.Process) -> None:
        self.proc = proc
        assert proc.stdin is not None and proc.stdout is not None
        self.stdin = proc.stdin
        self.stdout = proc.stdout

    async def call(self, html: str, text: str | None) -> tuple[str, Any]:
        self.stdin.write(tokenizer.frame((html, text)))
        await self.stdin.drain()
        (size,) = tokenizer.HEADER.unpack(await self.stdout.readexactly(tokenizer.HEADER.size))
        if size > tokenizer.MAX_FRAME:
            raise EOFError(f"a reply of {size} bytes")
        reply: tuple[str, Any] = pickle.loads(await self.stdout.readexactly(size))  # noqa: S301 - our own child
        return reply

    async def kill(self) -> None:
        with contextlib.suppress(ProcessLookupError):
            self.proc.kill()
        await self.proc.wait()

    async def stop(self, grace: float = 2.0) -> None:
        """End it politely (EOF on its stdin), or kill it."""
        self.stdin.close()
        try:
            async with asyncio.timeout(grace):
                await self.proc.wait()
        except TimeoutError:
            await self.kill()


class TokenizerPool:
    """At most ``workers`` tokenizer processes; at most ``queue`` messages waiting for one."""

    def __init__(self, *, workers: int = 2, queue: int = 32, timeout: float = PREPARE_TIMEOUT) -> None:
        self.workers = workers
        self.queue = queue
        self.timeout = timeout
        self._slots = asyncio.Semaphore(workers)
        self.waiting = 0  # messages waiting for a worker
        self.running = 0  # messages a worker is on
        self._idle: list[_Worker] = []
        self._live: set[_Worker] = set()
        self._reaping: set[asyncio.Task[None]] = set()
        self._closed = False

    async def prepare(self, html: str, text: str | None) -> PreparedMessage:
        if self._closed:
            raise RewriteBusy("the collector is stopping; retry on another one")
        if self._slots.locked() and self.waiting >= self.queue:
            raise RewriteBusy(
                f"all {self.workers} tokenizer processes are busy and {self.waiting} messages wait for one; "
                "retry later (CLICKEDGE_COLLECTOR_REWRITE_WORKERS, CLICKEDGE_COLLECTOR_REWRITE_QUEUE)"
            )
        self.waiting += 1
        try:
            await self._slots.acquire()
        finally:
            self.waiting -= 1
        self.running += 1
        try:
            if self._closed:
                raise RewriteBusy("the collector is stopping; retry on another one")
            worker = self._idle.pop() if self._idle else await self._spawn()
            return await self._run(worker, html, text)
        finally:
            self.running -= 1
            self._slots.release()

    async def _run(self, worker: _Worker, html: str, text: str | None) -> PreparedMessage:
        try:
            async with asyncio.timeout(self.timeout):  # from when this worker takes the message
                kind, value = await worker.call(html, text)
        except TimeoutError:
            log.warning("a message took longer than %gs to tokenize; its worker is killed", self.timeout)
            await self._discard(worker)
            raise RewriteError(f"the HTML could not be tokenized within {self.timeout:g}s") from None
        except (OSError, EOFError, pickle.UnpicklingError, asyncio.IncompleteReadError) as exc:
            await self._discard(worker)
            log.error("a tokenizer worker failed (exit code %s): %r", worker.proc.returncode, exc)
            raise RewriteError(
                f"the HTML could not be tokenized: the tokenizer process ended (exit code {worker.proc.returncode})"
            ) from None
        except BaseException:
            # Cancelled mid-message: its reply would be read as the next message's. Kill it without waiting
            # here (this task is being cancelled); a reaper task awaits its exit.
            self._live.discard(worker)
            task = asyncio.get_running_loop().create_task(worker.kill())
            self._reaping.add(task)
            task.add_done_callback(self._reaping.discard)
            raise
        self._idle.append(worker)
        if kind == "error":
            raise RewriteError(value)
        assert isinstance(value, PreparedMessage)
        return value

    async def _spawn(self) -> _Worker:
        try:
            proc = await asyncio.create_subprocess_exec(
                sys.executable,
                "-m",
                "collector.tokenizer",
                stdin=asyncio.subprocess.PIPE,
                stdout=asyncio.subprocess.PIPE,
            )
        except OSError as exc:
            raise RewriteBusy(f"could not start a tokenizer process: {exc}") from None
        worker = _Worker(proc)
        self._live.add(worker)
        try:
            async with asyncio.timeout(START_TIMEOUT):
                ready = await worker.stdout.readexactly(len(tokenizer.READY))
        except (TimeoutError, asyncio.IncompleteReadError):
            ready = b""
        if ready != tokenizer.READY:
            await self._discard(worker)
            raise RewriteBusy(f"a tokenizer process did not start (exit code {proc.returncode}); see the log")
        return worker

    async def _discard(self, worker: _Worker) -> None:
        self._live.discard(worker)
        await worker.kill()

    async def close(self) -> None:
        self._closed = True
        idle, self._idle = self._idle, []
        busy = self._live - set(idle)
        self._live.clear()
        await asyncio.gather(
            *(w.stop() for w in idle), *(w.kill() for w in busy), *self._reaping, return_exceptions=True
        )


class Rewriter:
    def __init__(
        self,
        key_path: Path,
        public_url: str,
        *,
        workers: int = 2,
        queue: int = 32,
        timeout: float = PREPARE_TIMEOUT,
    ) -> None:
        self._key_path = key_path
        self._public_url = public_url
        self._codec: TokenCodec | None = None
        self._prepared: OrderedDict[tuple[int, bytes], tuple[PreparedMessage, bool]] = OrderedDict()
        self.tokenizers = TokenizerPool(workers=workers, queue=queue, timeout=timeout)

    async def _prepare(self, html: str, text: str | None) -> PreparedMessage:
        if len(html) + len(text or "") > MAX_MESSAGE_CHARS:
            raise RewriteError(f"the message is larger than {MAX_MESSAGE_CHARS} characters")
        return await self.tokenizers.prepare(html, text)

    async def close(self) -> None:
        await self.tokenizers.close()

    def _minter(self) -> TokenCodec:
        if self._codec is None:
            try:
                self._codec = keys.load(self._key_path).codec()
            except keys.KeyFileError as exc:
                raise campaigns.Conflict(f"this collector cannot mint links: {exc}") from None
        return self._codec

    def _untracked(
        self, html: str, text: str | None, tracking_url: str | None, campaign_id: int, contact: int | None, sent_at: int
    ) -> dict[str, Any]:
        """The message unchanged (tracking is off), with its one-click unsubscribe headers all the same."""
        headers = {}
        if contact is not None:  # this collector need not hold link keys for an anonymous message
            headers = sending.unsubscribe_headers(
                self._minter(),
                sending.base_url(tracking_url, self._public_url),
                campaign_id=campaign_id,
                contact=contact,
                sent_at=sent_at,
            )
        return {"html": html, "text": text, "tracking": False, "headers": headers, "links": []}

    async def rewrite(
        self, pool: asyncpg.Pool, campaign_id: int, html: str, text: str | None, contact: int | None, sent_at: int
    ) -> dict[str, Any]:
        # No database connection is held while the message waits for a tokenizer: the pool also serves ingest.
        async with pool.acquire() as conn:
            settings = await sending.tracking_for(conn, campaign_id)
        if not settings.tracking:
            return self._untracked(html, text, settings.tracking_url, campaign_id, contact, sent_at)
        digest = hashlib.sha256(html.encode() + b"\0" + (text or "").encode()).digest()
        cached = self._prepared.get((campaign_id, digest))
        if cached is None:
            cached = (await self._prepare(html, text), False)
        message, registered = cached
        async with pool.acquire() as conn:
            settings = await sending.register(conn, campaign_id, message, contact, links=not registered)
        self._prepared[(campaign_id, digest)] = (message, True)
        self._prepared.move_to_end((campaign_id, digest))
        while len(self._prepared) > CACHE_SIZE:
            self._prepared.popitem(last=False)
        sendable = sending.render(
            message,
            (html, text),
            self._minter(),
            tracking=settings.tracking,
            base=sending.base_url(settings.tracking_url, self._public_url),
            campaign_id=campaign_id,
            contact=contact,
            sent_at=sent_at,
            decoy=settings.decoy_link,
        )
        if not sendable.tracking:
            return self._untracked(html, text, settings.tracking_url, campaign_id, contact, sent_at)
        return {
            "html": sendable.html,
            "text": sendable.text,
            "tracking": True,
            "headers": sendable.headers,
            "links": [
                {"id": s.link_id, "destination": s.destination, "name": s.name, "part": s.part} for s in message.links
            ],
            "skipped": [{"href": s.href, "reason": s.reason} for s in message.skipped],
        }
