"""The webhook deliverer itself (collector.webhooks.Deliverer), without the ingest path in front of it:
outbox rows written here, delivered to receivers on real loopback sockets, outcomes read back from the
real PostgreSQL. Success, retries with a growing backoff, the last attempt, a lease left by a collector
killed mid-delivery, and the destination policy.

Rows are queued as due a year ago, so that a claim (oldest due first) takes them before anything another
test left behind; each test settles its rows at the end, so no later deliverer sends them again."""

from __future__ import annotations

import asyncio
import ipaddress
import logging
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

import aiohttp
import asyncpg
import orjson
import pytest
from aiohttp import web
from aiohttp.test_utils import TestServer

from collector.destinations import ALLOW_SETTING, Networks
from collector.metrics import CollectorMetrics
from collector.webhooks import CLAIM_SECONDS, MAX_ATTEMPTS, Deliverer, GuardedResolver, guarded_session
from common import signing
from tests.collector.test_actions import settle
from tests.conftest import eventually
from tests.faults.harness import CollectorProc, kill_leftovers, wait_http

WEBHOOK_SECRET = "whsec-deliverer-test-0123456789"
MASTER = WEBHOOK_SECRET.encode()
LOOPBACK: Networks = (ipaddress.ip_network("127.0.0.0/8"),)


class Receiver:
    """A webhook receiver on 127.0.0.1: answers each request with the next of ``answers`` (then 200), and
    while ``hold`` is set, keeps each request waiting until ``release`` is set."""

    def __init__(self, *answers: int, hold: bool = False) -> None:
        self.answers = list(answers)
        self.hold = hold
        self.release = asyncio.Event()
        self.requests: list[tuple[dict[str, str], bytes]] = []
        self.app = web.Application()
        self.app.router.add_post("/hook", self.hook)

    async def hook(self, request: web.Request) -> web.Response:
        self.requests.append((dict(request.headers), await request.read()))
        if self.hold:
            await self.release.wait()
        return web.Response(status=self.answers.pop(0) if self.answers else 200, text="thanks")


@pytest.fixture
async def pool(database_url: str) -> AsyncIterator[asyncpg.Pool]:
    async with asyncpg.create_pool(database_url, min_size=0, max_size=4) as pool:
        yield pool


@asynccontextmanager
async def client(allow: Networks) -> AsyncIterator[aiohttp.ClientSession]:
    """The HTTP client Deliverer.run makes: the destination policy on every connection."""
    resolver = GuardedResolver(allow)
    try:
        async with guarded_session(allow, resolver) as http:
            yield http
    finally:
        await resolver.close()


@asynccontextmanager
async def receiving(receiver: Receiver, db: asyncpg.Connection) -> AsyncIterator[str]:
    """The receiver's URL while it listens; afterwards, its rows settled."""
    async with TestServer(receiver.app, host="127.0.0.1") as server:
        url = f"http://127.0.0.1:{server.port}/hook"
        try:
            yield url
        finally:
            receiver.release.set()
            await settle(db, [url, url.replace("127.0.0.1", "localhost")])


async def queue(db: asyncpg.Connection, url: str, *, attempts: int = 0) -> asyncpg.Record:
    body = orjson.dumps({"type": "link.first_click", "contact_id": 42, "n": str(uuid.uuid4())}).decode()
    row = await db.fetchrow(
        "INSERT INTO webhook_outbox (idempotency_key, url, body, attempts, next_attempt_at) "
        "VALUES ($1, $2, $3, $4, now() - interval '1 year') RETURNING id, idempotency_key, body::text AS body",
        uuid.uuid4(),
        url,
        body,
        attempts,
    )
    assert row is not None
    return row


async def outbox_row(db: asyncpg.Connection, row_id: int) -> asyncpg.Record:
    row = await db.fetchrow(
        "SELECT attempts, last_error, delivered_at, failed_at, "
        "extract(epoch FROM next_attempt_at - now())::float8 AS due_in FROM webhook_outbox WHERE id = $1",
        row_id,
    )
    assert row is not None
    return row


def outcomes(metrics: CollectorMetrics) -> dict[str, float]:
    values = {
        outcome: metrics.registry.get_sample_value("clickedge_collector_webhook_deliveries_total", {"outcome": outcome})
        for outcome in ("delivered", "error", "refused", "failed")
    }
    return {outcome: value for outcome, value in values.items() if value}


async def endpoint_secret(db: asyncpg.Connection, url: str) -> bytes:
    endpoint = await db.fetchrow("SELECT id, generation FROM webhook_endpoints WHERE url = $1", url)
    assert endpoint is not None
    return signing.endpoint_secret(MASTER, endpoint["id"], endpoint["generation"]).encode()


async def test_a_delivery_is_signed_with_its_endpoints_secret_and_recorded(
    pool: asyncpg.Pool, db: asyncpg.Connection
) -> None:
    receiver, metrics = Receiver(), CollectorMetrics()
    async with receiving(receiver, db) as url, client(LOOPBACK) as http:
        queued = await queue(db, url)
        assert await Deliverer(pool, MASTER, LOOPBACK, metrics).deliver_due(http)
        row = await outbox_row(db, queued["id"])
        assert (row["attempts"], row["last_error"], row["failed_at"]) == (1, None, None)
        assert row["delivered_at"] is not None
        assert len(receiver.requests) == 1
        headers, body = receiver.requests[0]
        assert body == queued["body"].encode()  # the stored JSON, byte for byte
        assert headers[signing.IDEMPOTENCY_HEADER] == str(queued["idempotency_key"])
        assert (headers["Content-Type"], headers["User-Agent"]) == ("application/json", "Clickedge-Webhooks/1")
        # Signed with the secret of this URL's endpoint (made on first use), never the master itself.
        assert signing.verify(await endpoint_secret(db, url), body, headers[signing.SIGNATURE_HEADER])
        assert not signing.verify(MASTER, body, headers[signing.SIGNATURE_HEADER])
        assert outcomes(metrics) == {"delivered": 1}


async def test_a_failed_delivery_is_retried_after_a_backoff_that_grows(
    pool: asyncpg.Pool, db: asyncpg.Connection, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING, "clickedge.collector.webhooks")
    receiver, metrics = Receiver(500, 503), CollectorMetrics()
    deliverer = Deliverer(pool, MASTER, LOOPBACK, metrics)
    async with receiving(receiver, db) as url, client(LOOPBACK) as http:
        queued = await queue(db, url)
        delays = []
        for attempt, status in ((1, 500), (2, 503)):
            await deliverer.deliver_due(http)
            row = await outbox_row(db, queued["id"])
            assert (row["attempts"], row["last_error"], row["delivered_at"]) == (attempt, f"HTTP {status}", None)
            delays.append(row["due_in"])
            # Not due during its backoff: another pass leaves it alone.
            await deliverer.deliver_due(http)
            assert (await outbox_row(db, queued["id"]))["attempts"] == attempt
            # The backoff passes.
            await db.execute("UPDATE webhook_outbox SET next_attempt_at = now() WHERE id = $1", queued["id"])
        # 2^attempts seconds, +-20 % jitter (less the moment between the update and the read).
        assert 1.0 < delays[0] <= 2.4 and 2.6 < delays[1] <= 4.8, delays
        await deliverer.deliver_due(http)
        row = await outbox_row(db, queued["id"])
        assert (row["attempts"], row["last_error"]) == (3, None) and row["delivered_at"] is not None
    keys = {headers[signing.IDEMPOTENCY_HEADER] for headers, _ in receiver.requests}
    assert len(receiver.requests) == 3 and keys == {str(queued["idempotency_key"])}  # one key for every attempt
    assert outcomes(metrics) == {"error": 2, "delivered": 1}
    logged = [r.getMessage() for r in caplog.records]
    assert any(f"(HTTP 500); attempt 2 of {MAX_ATTEMPTS} in " in m for m in logged), logged
    assert any(f"(HTTP 503); attempt 3 of {MAX_ATTEMPTS} in " in m for m in logged), logged


async def test_the_last_attempt_failing_fails_the_delivery_for_good(
    pool: asyncpg.Pool, db: asyncpg.Connection, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.ERROR, "clickedge.collector.webhooks")
    receiver, metrics = Receiver(500, 500), CollectorMetrics()
    deliverer = Deliverer(pool, MASTER, LOOPBACK, metrics)
    async with receiving(receiver, db) as url, client(LOOPBACK) as http:
        queued = await queue(db, url, attempts=MAX_ATTEMPTS - 1)
        await deliverer.deliver_due(http)
        row = await outbox_row(db, queued["id"])
        assert (row["attempts"], row["last_error"], row["delivered_at"]) == (MAX_ATTEMPTS, "HTTP 500", None)
        assert row["failed_at"] is not None
        # Given up: never claimed again, however long one waits.
        await db.execute(
            "UPDATE webhook_outbox SET next_attempt_at = now() - interval '1 year' WHERE id = $1", queued["id"]
        )
        await deliverer.deliver_due(http)
        assert (await outbox_row(db, queued["id"]))["attempts"] == MAX_ATTEMPTS
    assert len(receiver.requests) == 1
    assert outcomes(metrics) == {"failed": 1}
    assert any(f"failed for good after {MAX_ATTEMPTS} attempts: HTTP 500" in r.getMessage() for r in caplog.records)


async def test_a_row_claimed_by_a_collector_that_died_is_delivered_once_its_lease_expires(
    pool: asyncpg.Pool, db: asyncpg.Connection, database_url: str, data_dir: Path
) -> None:
    receiver = Receiver(hold=True)  # the first request is still waiting for its answer when its collector dies
    async with receiving(receiver, db) as url, client(LOOPBACK) as http:
        collector = CollectorProc(database_url)
        collector.args += ["--data-dir", str(data_dir)]
        collector.env.update({"CLICKEDGE_WEBHOOK_SECRET": WEBHOOK_SECRET, ALLOW_SETTING: "127.0.0.0/8"})
        try:
            await collector.start()
            await wait_http(f"{collector.url}/readyz")
            queued = await queue(db, url)

            async def in_flight() -> bool:
                return len(receiver.requests) == 1

            await eventually(in_flight, timeout=15)
            await collector.kill()  # SIGKILL, mid-request: it records nothing
        finally:
            await kill_leftovers()
        row = await outbox_row(db, queued["id"])
        assert (row["attempts"], row["last_error"], row["delivered_at"], row["failed_at"]) == (1, None, None, None)
        assert CLAIM_SECONDS - 10 < row["due_in"] <= CLAIM_SECONDS  # leased to the dead collector
        deliverer = Deliverer(pool, MASTER, LOOPBACK)
        await deliverer.deliver_due(http)
        assert (await outbox_row(db, queued["id"]))["attempts"] == 1  # nobody else takes it during the lease
        receiver.hold = False
        # The lease runs out.
        await db.execute(
            "UPDATE webhook_outbox SET next_attempt_at = next_attempt_at - make_interval(secs => $2) WHERE id = $1",
            queued["id"],
            CLAIM_SECONDS,
        )
        await deliverer.deliver_due(http)
        row = await outbox_row(db, queued["id"])
        assert (row["attempts"], row["last_error"]) == (2, None) and row["delivered_at"] is not None
    assert len(receiver.requests) == 2
    (first_headers, first_body), (headers, body) = receiver.requests
    assert (
        first_headers[signing.IDEMPOTENCY_HEADER]
        == headers[signing.IDEMPOTENCY_HEADER]
        == str(queued["idempotency_key"])
    )
    assert first_body == body  # the same delivery again: the receiver can tell by its key
    secret = await endpoint_secret(db, url)
    assert signing.verify(secret, first_body, first_headers[signing.SIGNATURE_HEADER])  # the dead collector's
    assert signing.verify(secret, body, headers[signing.SIGNATURE_HEADER])


async def test_a_destination_the_policy_refuses_is_never_contacted(pool: asyncpg.Pool, db: asyncpg.Connection) -> None:
    receiver, metrics = Receiver(), CollectorMetrics()
    async with receiving(receiver, db) as url, client(()) as http:  # the default policy: public addresses only
        by_name = url.replace("127.0.0.1", "localhost")  # resolved from /etc/hosts: loopback
        queued = [await queue(db, url), await queue(db, by_name)]
        await Deliverer(pool, MASTER, (), metrics).deliver_due(http)
        for row_id in (q["id"] for q in queued):
            row = await outbox_row(db, row_id)
            error = row["last_error"]
            assert error.startswith("refused: ") and "is loopback" in error and ALLOW_SETTING in error, error
            assert row["attempts"] == 1 and row["delivered_at"] is None and row["failed_at"] is None
            assert row["due_in"] > 1.0  # retried later, like any failure (an operator may open the range)
    assert receiver.requests == []
    assert outcomes(metrics) == {"refused": 2}


async def test_the_delivery_task_wakes_on_demand_and_outlives_an_unreachable_database(
    pool: asyncpg.Pool, db: asyncpg.Connection, caplog: pytest.LogCaptureFixture
) -> None:
    receiver = Receiver()
    async with receiving(receiver, db) as url:
        deliverer = Deliverer(pool, MASTER, LOOPBACK)
        deliverer.wake.set()
        task = asyncio.create_task(deliverer.run(idle=3600))  # it would not look again on its own
        try:

            async def waiting() -> bool:  # it clears the flag once a look finds nothing, then waits on it
                return not deliverer.wake.is_set()

            await eventually(waiting)
            queued = await queue(db, url)
            deliverer.wake.set()  # what ingest does after writing first clicks with webhooks

            async def delivered() -> bool:
                return (await outbox_row(db, queued["id"]))["delivered_at"] is not None

            await eventually(delivered, timeout=10)
        finally:
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)
    # A database that does not answer (nothing listens on that loopback port): logged, and the task goes on.
    async with asyncpg.create_pool("postgresql://nobody@127.0.0.1:1/none", min_size=0) as dead:
        task = asyncio.create_task(Deliverer(dead, MASTER, LOOPBACK).run(idle=0.05))
        try:

            async def warned_twice() -> bool:
                return sum("webhook outbox unavailable" in r.getMessage() for r in caplog.records) >= 2

            await eventually(warned_twice, timeout=10)
            assert not task.done()
        finally:
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)
