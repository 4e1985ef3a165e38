"""The collector's rewrite endpoint: the sender library (edge.rewrite, edge.keys) plus registration.

A campaign's message is prepared once and cached (by its content) so that each recipient's rewrite only
mints; its links are registered in PostgreSQL the first time, and each recipient is recorded once.
"""

from __future__ import annotations

import hashlib
from collections import OrderedDict
from pathlib import Path
from typing import Any

import asyncpg

from collector import campaigns
from edge import keys
from edge.rewrite import PreparedMessage, prepare
from edge.token import TokenCodec

CACHE_SIZE = 64


class Rewriter:
    def __init__(self, key_path: Path, public_url: str) -> None:
        self._key_path = key_path
        self._public_url = public_url
        self._codec: TokenCodec | None = None
        self._prepared: OrderedDict[tuple[int, bytes], tuple[PreparedMessage, bool]] = OrderedDict()

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
        tracking = await campaigns.ensure_campaign(conn, campaign_id)
        if not tracking:
            return {"html": html, "text": text, "tracking": False, "links": []}
        digest = hashlib.sha256(html.encode() + b"\0" + (text or "").encode()).digest()
        cached = self._prepared.get((campaign_id, digest))
        if cached is None:
            message = prepare(html, text)
            cached = (message, False)
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
            self._minter(), base_url=self._public_url, campaign_id=campaign_id, contact_id=contact, sent_at=sent_at
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
