"""Keeps an edge worker's block list (edge/blocklist.py) current: fetched from the collector every
CLICKEDGE_BLOCKLIST_POLL seconds (5) with its ETag, so an unchanged list costs a 304; each new list swapped
in whole and saved to DATA_DIR/blocklist.json, which a worker reads at start before it serves a request. When
the collector cannot be reached the worker keeps enforcing the list it has, however old (the age is a
metric); a list it cannot read is refused and logged, and the old one stays.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from pathlib import Path

import aiohttp

from common.events import EDGE_BLOCKLIST_PATH
from common.logs import Throttled
from edge.blocklist import Blocklist

log = logging.getLogger("clickedge.edge.blocklist")
_errors_log = Throttled(log)
REQUEST_TIMEOUT = 5.0


class BlocklistSync:
    def __init__(
        self,
        *,
        collector_url: str,
        secret: str,
        path: Path,
        apply: Callable[[Blocklist], None],
        current: Callable[[], Blocklist],
        interval: float,
        on_error: Callable[[], None] = lambda: None,
    ) -> None:
        self._url = collector_url.rstrip("/") + EDGE_BLOCKLIST_PATH
        self._headers = {"Authorization": f"Bearer {secret}"}
        self._path = path
        self._apply = apply
        self._current = current
        self._interval = interval
        self._on_error = on_error
        self.checked_at = 0.0  # time.time() of the last answer from the collector (0: none yet)
        self._session: aiohttp.ClientSession | None = None

    def load(self) -> None:
        """The list saved by an earlier run, if any: enforced before the first fetch."""
        try:
            saved = Blocklist.load(self._path)
        except (OSError, ValueError) as exc:
            log.error("cannot read the saved block list %s (%s); waiting for the collector's", self._path, exc)
            return
        if saved is not None:
            self._apply(saved)
            log.info("enforcing the saved block list (%d entries) until the collector answers", saved.entries)

    async def run(self) -> None:
        while True:
            try:
                await self.fetch()
            except Exception:  # a bug of ours: logged and counted; the list held stays enforced
                self._on_error()
                _errors_log.log(logging.ERROR, "unexpected error fetching the block list", exc_info=True)
            await asyncio.sleep(self._interval)

    async def fetch(self) -> bool:
        """One fetch; True when the collector answered with a list (new or unchanged)."""
        headers = dict(self._headers)
        etag = self._current().etag
        if etag:
            headers["If-None-Match"] = etag
        try:
            async with self._client().get(self._url, headers=headers) as resp:
                if resp.status == 304:
                    self.checked_at = time.time()
                    return True
                if resp.status != 200:
                    raise aiohttp.ClientResponseError(resp.request_info, (), status=resp.status)
                new = Blocklist.parse(await resp.read(), resp.headers.get("ETag", ""))
        except (aiohttp.ClientError, TimeoutError, ValueError) as exc:
            self._on_error()
            _errors_log.log(
                logging.WARNING, "cannot fetch the block list from %s: %r; keeping the one held", self._url, exc
            )
            return False
        self._apply(new)
        self.checked_at = time.time()
        try:
            await asyncio.to_thread(new.save, self._path)
        except OSError as exc:
            _errors_log.log(logging.ERROR, "cannot save the block list to %s: %s", self._path, exc)
        log.info("block list now has %d entries", new.entries)
        return True

    def _client(self) -> aiohttp.ClientSession:
        if self._session is None:
            self._session = aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=REQUEST_TIMEOUT))
        return self._session

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()
