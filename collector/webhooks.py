"""Delivers link-action webhooks from the outbox: signed, at least once, with retries and backoff.

Never on the click path: ingest only inserts outbox rows in the click's transaction. This task claims due
rows (``FOR UPDATE SKIP LOCKED``, so several collectors share the work), posts each one signed with the
webhook secret and its idempotency key, and records the outcome. A failure is retried after
2^attempts seconds (capped at an hour, with jitter); after MAX_ATTEMPTS the row is marked failed.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random

import aiohttp
import asyncpg

from clickedge.signing import IDEMPOTENCY_HEADER, SIGNATURE_HEADER, sign

log = logging.getLogger("clickedge.collector.webhooks")

BATCH = 20
MAX_ATTEMPTS = 15
BACKOFF_CAP = 3600.0
CLAIM_SECONDS = 60  # a claimed row is invisible to other deliverers this long
REQUEST_TIMEOUT = 10.0

CLAIM = f"""
UPDATE webhook_outbox SET next_attempt_at = now() + interval '{CLAIM_SECONDS} seconds', attempts = attempts + 1
WHERE id IN (SELECT id FROM webhook_outbox
             WHERE delivered_at IS NULL AND failed_at IS NULL AND next_attempt_at <= now()
             ORDER BY next_attempt_at LIMIT {BATCH} FOR UPDATE SKIP LOCKED)
RETURNING id, idempotency_key, url, body::text AS body, attempts
"""  # noqa: S608 - constants only


def backoff(attempts: int) -> float:
    return min(2.0**attempts, BACKOFF_CAP) * random.uniform(0.8, 1.2)


class Deliverer:
    def __init__(self, pool: asyncpg.Pool, secret: bytes) -> None:
        self._pool = pool
        self._secret = secret
        self.wake = asyncio.Event()
        self.delivered = 0
        self.failed = 0

    async def run(self, idle: float = 1.0) -> None:
        async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=REQUEST_TIMEOUT)) as http:
            while True:
                try:
                    busy = await self.deliver_due(http)
                except (OSError, asyncpg.PostgresError, asyncpg.InterfaceError) as exc:
                    log.warning("webhook outbox unavailable: %s", exc)
                    busy = False
                except Exception:  # a task boundary: log, keep delivering the rest
                    log.exception("webhook delivery failed unexpectedly; continuing")
                    busy = False
                if not busy:
                    self.wake.clear()
                    with contextlib.suppress(TimeoutError):
                        await asyncio.wait_for(self.wake.wait(), idle)

    async def deliver_due(self, http: aiohttp.ClientSession) -> bool:
        async with self._pool.acquire() as conn:
            rows = await conn.fetch(CLAIM)
        if not rows:
            return False
        results = await asyncio.gather(*(self._post(http, r) for r in rows))
        async with self._pool.acquire() as conn:
            for row, error in zip(rows, results, strict=True):
                if error is None:
                    self.delivered += 1
                    await conn.execute(
                        "UPDATE webhook_outbox SET delivered_at = now(), last_error = NULL WHERE id = $1",
                        row["id"],
                    )
                elif row["attempts"] >= MAX_ATTEMPTS:
                    self.failed += 1
                    log.error(
                        "webhook %s to %s failed for good after %d attempts: %s",
                        row["idempotency_key"],
                        row["url"],
                        row["attempts"],
                        error,
                    )
                    await conn.execute(
                        "UPDATE webhook_outbox SET failed_at = now(), last_error = $2 WHERE id = $1",
                        row["id"],
                        error,
                    )
                else:
                    delay = backoff(row["attempts"])
                    log.warning(
                        "webhook %s to %s failed (%s); attempt %d of %d in %.0fs",
                        row["idempotency_key"],
                        row["url"],
                        error,
                        row["attempts"] + 1,
                        MAX_ATTEMPTS,
                        delay,
                    )
                    await conn.execute(
                        """UPDATE webhook_outbox SET next_attempt_at = now() + make_interval(secs => $2),
                           last_error = $3 WHERE id = $1""",
                        row["id"],
                        delay,
                        error,
                    )
        return True

    async def _post(self, http: aiohttp.ClientSession, row: asyncpg.Record) -> str | None:
        body = row["body"].encode()
        headers = {
            "Content-Type": "application/json",
            SIGNATURE_HEADER: sign(self._secret, body),
            IDEMPOTENCY_HEADER: str(row["idempotency_key"]),
            "User-Agent": "Clickedge-Webhooks/1",
        }
        try:
            async with http.post(row["url"], data=body, headers=headers, allow_redirects=False) as resp:
                await resp.content.read(64 << 10)  # a bounded read: the answer's body is not used
                if 200 <= resp.status < 300:
                    return None
                return f"HTTP {resp.status}"
        except Exception as exc:  # whatever one receiver does (or its URL is), it is that row's error alone
            return f"{type(exc).__name__}: {exc}"[:300]
