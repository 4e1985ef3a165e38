"""The collector's rewrite endpoint: the sender library (edge.rewrite, edge.keys) plus registration.

A campaign's message is prepared once and cached (by its content) so that each recipient's rewrite only
mints; its links are registered in PostgreSQL the first time, and each recipient is recorded once.
Preparing runs in a separate process with a deadline: Python's HTML tokenizer can take quadratic time on
hostile input (CVE-2025-6069 on older Pythons), and the collector's event loop also ingests clicks.
"""

from __future__ import annotations

import asyncio
import hashlib
import multiprocessing
import multiprocessing.pool
from collections import OrderedDict
from pathlib import Path
from typing import Any

import asyncpg

from collector import campaigns
from edge import keys
from edge.rewrite import PreparedMessage, RewriteError, prepare
from edge.token import TokenCodec

CACHE_SIZE = 64
MAX_MESSAGE_CHARS = 1 << 20
PREPARE_TIMEOUT = 10.0


class Rewriter:
    def __init__(self, key_path: Path, public_url: str) -> None:
        self._key_path = key_path
        self._public_url = public_url
        self._codec: TokenCodec | None = None
        self._prepared: OrderedDict[tuple[int, bytes], tuple[PreparedMessage, bool]] = OrderedDict()
        self._pool: multiprocessing.pool.Pool | None = None

    async def _prepare(self, html: str, text: str | None) -> PreparedMessage:
        if len(html) + len(text or "") > MAX_MESSAGE_CHARS:
            raise RewriteError(f"the message is larger than {MAX_MESSAGE_CHARS} characters")
        if self._pool is None:
            self._pool = multiprocessing.get_context("spawn").Pool(processes=1)
        loop = asyncio.get_running_loop()
        done: asyncio.Future[PreparedMessage] = loop.create_future()

        def settle(result: PreparedMessage | None, exc: BaseException | None) -> None:
            if done.done():
                return
            if exc is not None:
                done.set_exception(exc)
            else:
                assert result is not None
                done.set_result(result)

        # The pool calls these from its result thread: hand over to the event loop.
        def ok(result: PreparedMessage) -> None:
            loop.call_soon_threadsafe(settle, result, None)

        def failed(exc: BaseException) -> None:
            loop.call_soon_threadsafe(settle, None, exc)

        self._pool.apply_async(prepare, (html, text), callback=ok, error_callback=failed)
        try:
            return await asyncio.wait_for(done, PREPARE_TIMEOUT)
        except TimeoutError:
            self.close()  # the stuck tokenizer goes with its process; the next message gets a new one
            raise RewriteError(f"the HTML could not be tokenized within {PREPARE_TIMEOUT:.0f}s") from None

    def close(self) -> None:
        if self._pool is not None:
            self._pool.terminate()
            self._pool = None

    def _minter(self) -> TokenCodec:
        if self._codec is None:
            try:
                self._codec = keys.load(self._key_path).codec()
            except keys.KeyFileError as exc:
                raise campaigns.Conflict(f"this collector cannot mint links: {exc}") from None
        return self._codec

    async def rewrite(
        self, conn: asyncpg.Connection, campaign_id: int, html: str, text: str | None, contact: int | None, sent_at: int
    ) -> dict[str, Any]:
        tracking, tracking_url = await campaigns.ensure_campaign(conn, campaign_id)
        if not tracking:
            return {"html": html, "text": text, "tracking": False, "links": []}
        digest = hashlib.sha256(html.encode() + b"\0" + (text or "").encode()).digest()
        cached = self._prepared.get((campaign_id, digest))
        if cached is None:
            cached = (await self._prepare(html, text), False)
        message, registered = cached
        if not registered:
            await campaigns.register_links(conn, campaign_id, message.links)
        self._prepared[(campaign_id, digest)] = (message, True)
        self._prepared.move_to_end((campaign_id, digest))
        while len(self._prepared) > CACHE_SIZE:
            self._prepared.popitem(last=False)
        if contact is not None:
            await campaigns.record_recipient(conn, campaign_id, contact)
        out_html, out_text = message.render(
            self._minter(),
            base_url=tracking_url or self._public_url,
            campaign_id=campaign_id,
            contact_id=contact,
            sent_at=sent_at,
        )
        return {
            "html": out_html,
            "text": out_text,
            "tracking": True,
            "links": [
                {"id": s.link_id, "destination": s.destination, "name": s.name, "part": s.part} for s in message.links
            ],
            "skipped": [{"href": s.href, "reason": s.reason} for s in message.skipped],
        }
