"""Delivers link-action webhooks from the outbox: signed, at least once, with retries and backoff.

Never on the click path: ingest only inserts outbox rows in the click's transaction. This task claims due
rows (``FOR UPDATE SKIP LOCKED``, so several collectors share the work), posts each one signed with the
secret of its destination (collector/endpoints.py; derived from the master webhook secret) and its
idempotency key, and records the outcome. A failure is retried after 2^attempts seconds (capped at an
hour, with jitter); after MAX_ATTEMPTS the row is marked failed.

Every connection the HTTP client opens goes through the destination policy (collector/destinations.py)
twice over: the resolver drops refused addresses from what a name resolves to, so a name with some
public addresses still delivers and a name with none fails with the reason; and the socket factory checks
the numeric address of every socket just before it connects, which also covers IP-literal URLs (aiohttp
skips the resolver for those) and anything else that would bypass the resolver. Both see
the addresses of each connection as it is made, so DNS rebinding (a name that resolved to a public address
when the URL was set, and to 127.0.0.1 now) is caught, and aiohttp's DNS cache only ever holds addresses
the resolver already allowed. A refused delivery is an error like any other: recorded on the row
("refused: ..."), retried with backoff (an operator who opens the range with
CLICKEDGE_WEBHOOK_ALLOW_NETWORKS and restarts loses nothing), failed after MAX_ATTEMPTS.

A URL's user name, password and query are never logged or recorded (collector.destinations.shown/scrub),
also for rows stored before such URLs were refused.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import random
import socket

import aiohttp
import asyncpg
from aiohttp.abc import AbstractResolver, ResolveResult
from aiohttp.connector import AddrInfoType
from aiohttp.resolver import DefaultResolver

from collector import endpoints
from collector.destinations import ALLOW_SETTING, Networks, refusal, scrub, shown
from collector.metrics import CollectorMetrics
from common.signing import IDEMPOTENCY_HEADER, SIGNATURE_HEADER, sign

log = logging.getLogger("clickedge.collector.webhooks")

BATCH = 20
MAX_ATTEMPTS = 15
BACKOFF_CAP = 3600.0
CLAIM_SECONDS = 60  # a claimed row is invisible to other deliverers this long
REQUEST_TIMEOUT = 10.0
REFUSED = "refused: "  # how a delivery the destination policy refused starts its recorded error

CLAIM = f"""
UPDATE webhook_outbox SET next_attempt_at = now() + interval '{CLAIM_SECONDS} seconds', attempts = attempts + 1
WHERE id IN (SELECT id FROM webhook_outbox
             WHERE delivered_at IS NULL AND failed_at IS NULL AND next_attempt_at <= now()
             ORDER BY next_attempt_at LIMIT {BATCH} FOR UPDATE SKIP LOCKED)
RETURNING id, idempotency_key, url, body::text AS body, attempts
"""  # noqa: S608 - constants only


def backoff(attempts: int) -> float:
    return min(2.0**attempts, BACKOFF_CAP) * random.uniform(0.8, 1.2)


class DestinationRefused(OSError):
    """The destination policy refused every address of a webhook's host. An OSError, because aiohttp
    passes those on from resolvers and socket factories as the cause of its connection error."""


class GuardedResolver(AbstractResolver):
    """aiohttp's default resolver, keeping only the addresses the destination policy allows."""

    def __init__(self, allow: Networks) -> None:
        self._allow = allow
        self._resolver = DefaultResolver()

    async def resolve(
        self, host: str, port: int = 0, family: socket.AddressFamily = socket.AF_INET
    ) -> list[ResolveResult]:
        allowed, refused = [], []
        for result in await self._resolver.resolve(host, port, family):
            reason = refusal(result["host"], self._allow)
            if reason is None:
                allowed.append(result)
            else:
                refused.append(reason)
        if not allowed:
            raise DestinationRefused(f"{host} resolves to no allowed address: {'; '.join(refused)}")
        return allowed

    async def close(self) -> None:
        await self._resolver.close()


def guarded_socket(allow: Networks, addr_info: AddrInfoType) -> socket.socket:
    """aiohttp's socket factory: the last check, on the numeric address about to be connected to."""
    family, kind, proto, _, address = addr_info
    reason = refusal(str(address[0]), allow)
    if reason is not None:
        raise DestinationRefused(reason)
    return socket.socket(family=family, type=kind, proto=proto)


def guarded_session(allow: Networks, resolver: AbstractResolver) -> aiohttp.ClientSession:
    connector = aiohttp.TCPConnector(resolver=resolver, socket_factory=functools.partial(guarded_socket, allow))
    # trust_env stays off: an HTTP(S)_PROXY from the environment would connect to the proxy instead, and
    # the policy would check the proxy's address, not the receiver's.
    return aiohttp.ClientSession(connector=connector, timeout=aiohttp.ClientTimeout(total=REQUEST_TIMEOUT))


class Deliverer:
    def __init__(
        self, pool: asyncpg.Pool, master: bytes, allow: Networks = (), metrics: CollectorMetrics | None = None
    ) -> None:
        self._pool = pool
        self._master = master
        self._allow = allow
        self._metrics = metrics or CollectorMetrics()
        self.wake = asyncio.Event()

    async def run(self, idle: float = 1.0) -> None:
        resolver = GuardedResolver(self._allow)
        try:
            await self._run(resolver, idle)
        finally:
            await resolver.close()

    async def _run(self, resolver: AbstractResolver, idle: float) -> None:
        async with guarded_session(self._allow, resolver) as http:
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
            signers = await endpoints.for_urls(conn, [r["url"] for r in rows])
        results = await asyncio.gather(*(self._post(http, r, signers.get(r["url"])) for r in rows))
        async with self._pool.acquire() as conn:
            for row, error in zip(rows, results, strict=True):
                if error is None:
                    self._metrics.webhook_delivered.inc()
                    await conn.execute(
                        "UPDATE webhook_outbox SET delivered_at = now(), last_error = NULL WHERE id = $1",
                        row["id"],
                    )
                elif row["attempts"] >= MAX_ATTEMPTS:
                    self._metrics.webhook_failed.inc()
                    log.error(
                        "webhook %s to %s failed for good after %d attempts: %s",
                        row["idempotency_key"],
                        shown(row["url"]),
                        row["attempts"],
                        error,
                    )
                    await conn.execute(
                        "UPDATE webhook_outbox SET failed_at = now(), last_error = $2 WHERE id = $1",
                        row["id"],
                        error,
                    )
                else:
                    refused = error.startswith(REFUSED)
                    (self._metrics.webhook_refused if refused else self._metrics.webhook_error).inc()
                    delay = backoff(row["attempts"])
                    log.warning(
                        "webhook %s to %s failed (%s); attempt %d of %d in %.0fs",
                        row["idempotency_key"],
                        shown(row["url"]),
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

    async def _post(
        self, http: aiohttp.ClientSession, row: asyncpg.Record, endpoint: endpoints.Endpoint | None
    ) -> str | None:
        if endpoint is None:  # made by another collector a moment ago, not yet visible here
            return "no webhook endpoint for this URL yet"
        body = row["body"].encode()
        headers = {
            "Content-Type": "application/json",
            SIGNATURE_HEADER: sign(endpoint.secret(self._master).encode(), body),
            IDEMPOTENCY_HEADER: str(row["idempotency_key"]),
            "User-Agent": "Clickedge-Webhooks/1",
        }
        try:
            async with http.post(row["url"], data=body, headers=headers, allow_redirects=False) as resp:
                await resp.content.read(64 << 10)  # a bounded read: the answer's body is not used
                if 200 <= resp.status < 300:
                    return None
                return f"HTTP {resp.status}"
        except aiohttp.ClientConnectorError as exc:
            if isinstance(exc.os_error, DestinationRefused):
                return f"{REFUSED}{exc.os_error} (not opened by {ALLOW_SETTING})"[:300]
            return _error(exc, row["url"])
        except Exception as exc:  # whatever one receiver does (or its URL is), it is that row's error alone
            return _error(exc, row["url"])


def _error(exc: BaseException, url: str) -> str:
    # Some of aiohttp's errors quote the URL, user name, password and query included.
    return scrub(f"{type(exc).__name__}: {exc}", url)[:300]


OUTBOX_STATE = """
SELECT count(*) AS pending, coalesce(extract(epoch FROM now() - min(created_at)), 0)::float8 AS oldest
FROM webhook_outbox WHERE delivered_at IS NULL AND failed_at IS NULL
"""


async def outbox_state(conn: asyncpg.Connection) -> tuple[int, float]:
    """Deliveries waiting (in backoff included), and the age in seconds of the oldest (0: none)."""
    row = await conn.fetchrow(OUTBOX_STATE)
    assert row is not None
    return row["pending"], row["oldest"]
