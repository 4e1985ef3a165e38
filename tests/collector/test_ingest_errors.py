"""A batch PostgreSQL refuses or cannot take now, over a real socket against a real PostgreSQL.

The collector's answer decides what the edge does with the batch: a 400 carrying the Clickedge-Batch-Rejected
header for a batch the database can never take (SQLSTATE classes 21, 22, 23: the edge sets it aside in its
dead-letter file), a 503 without the header for a database that is down or slow (the edge keeps the batch and
retries). Either way nothing of the batch is written."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any
from urllib.parse import urlsplit

import asyncpg
import orjson
import pytest
from aiohttp import ClientResponse
from aiohttp.test_utils import TestClient, TestServer

from collector import campaigns
from collector.app import create_app
from collector.config import CollectorConfig
from common.events import BATCH_REJECTED_HEADER
from links.rewrite import LinkSlot
from tests.collector.derived import snapshot
from tests.collector.test_ingest import AUTH, batch, metric
from tests.conftest import INGEST_SECRET
from tests.faults.test_collector_faults import proxy_to

REJECTED = 'clickedge_collector_batches_total{outcome="rejected"}'
DB_ERROR = 'clickedge_collector_batches_total{outcome="db_error"}'


@pytest.fixture
async def client(database_url: str) -> AsyncIterator[TestClient[Any, Any]]:
    config = CollectorConfig(verdict_hold=0, database_url=database_url, ingest_secret=INGEST_SECRET)
    async with TestClient(TestServer(create_app(config))) as client:
        yield client


async def outcomes(client: TestClient[Any, Any]) -> tuple[float, float]:
    return await metric(client, REJECTED), await metric(client, DB_ERROR)


async def error(resp: ClientResponse) -> str:
    message: str = (await resp.json())["error"]
    return message


async def test_a_batch_the_database_can_never_take_gets_400_with_the_header_and_writes_nothing(
    client: TestClient[Any, Any], db: asyncpg.Connection, campaign_id: int
) -> None:
    # The wire format takes any string of 1 to 64 characters as the edge's name, NUL included, and
    # PostgreSQL keeps no NUL in text: "invalid byte sequence" (22021, a data error), whenever it is sent.
    doc = batch(campaign_id, 3, contact_base=campaign_id * 10)
    doc["edge"] = "edge\x00one"
    rejected, db_errors = await outcomes(client)
    resp = await client.post("/v1/clicks", data=orjson.dumps(doc), headers=AUTH)
    assert resp.status == 400
    assert resp.headers.get(BATCH_REJECTED_HEADER) == "invalid"  # the edge sets it aside, no retry
    message = await error(resp)
    # PostgreSQL said so (a check of the wire format would name the field instead).
    assert message.startswith("database refused the batch: ") and "0x00" in message, message
    assert await outcomes(client) == (rejected + 1, db_errors)
    assert await db.fetchval("SELECT count(*) FROM clicks WHERE campaign_id = $1", campaign_id) == 0
    assert await db.fetchval("SELECT count(*) FROM refused_clicks WHERE campaign_id = $1", campaign_id) == 0


async def test_a_data_error_late_in_the_batch_rolls_the_whole_batch_back(
    client: TestClient[Any, Any], db: asyncpg.Connection, campaign_id: int
) -> None:
    # A refusal after the clicks, the report rows and the applied-action rows are written in the batch's
    # transaction: a CHECK constraint on contact_events (the timeline, written last by the link actions)
    # that this campaign's rows violate (23514, an integrity error). Added for this test, dropped after it.
    await campaigns.upsert_campaign(db, campaign_id, name="Refused")
    await campaigns.register_links(db, campaign_id, [LinkSlot(1, "https://shop.example.com/", "A", "html")])
    await campaigns.set_actions(db, campaign_id, 1, [{"type": "add_tag", "tag": "refused"}], "test")
    contacts = tuple(campaign_id * 10 + i for i in range(6))
    body = orjson.dumps(batch(campaign_id, 6, contact_base=contacts[0]))  # links 0, 1 and 2: two clicks on 1
    empty = await snapshot(db, campaign_id, contacts)
    constraint = f"clickedge_test_refuses_{campaign_id}"
    await db.execute(
        f"ALTER TABLE contact_events ADD CONSTRAINT {constraint} CHECK (campaign_id <> {campaign_id}) NOT VALID"
    )
    try:
        rejected, db_errors = await outcomes(client)
        resp = await client.post("/v1/clicks", data=body, headers=AUTH)
        assert resp.status == 400 and resp.headers.get(BATCH_REJECTED_HEADER) == "invalid"
        message = await error(resp)
        assert message.startswith("database refused the batch: ") and constraint in message, message
        assert await outcomes(client) == (rejected + 1, db_errors)
        assert await snapshot(db, campaign_id, contacts) == empty  # not a row in any table, clicks included
    finally:
        await db.execute(f"ALTER TABLE contact_events DROP CONSTRAINT {constraint}")
    # What a fixed database then takes is the whole batch, none of it a duplicate of a kept part.
    resp = await client.post("/v1/clicks", data=body, headers=AUTH)
    assert await resp.json() == {"received": 6, "inserted": 6, "duplicates": 0, "refused": 0, "unsubscribes": 0}
    tagged = await db.fetch(
        "SELECT contact_id FROM contact_tags WHERE tag = 'refused' AND contact_id = ANY($1)", contacts
    )
    assert sorted(r["contact_id"] for r in tagged) == [contacts[1], contacts[4]]


async def test_a_database_that_does_not_answer_in_time_gets_503_and_the_batch_is_taken_later(
    database_url: str, db: asyncpg.Connection, campaign_id: int
) -> None:
    config = CollectorConfig(verdict_hold=0, database_url=database_url, ingest_secret=INGEST_SECRET, db_timeout=0.5)
    body = orjson.dumps(batch(campaign_id, 5, contact_base=campaign_id * 10))
    async with TestClient(TestServer(create_app(config))) as client:
        rejected, db_errors = await outcomes(client)
        # A lock the batch's statement waits for (as behind a long migration), past the collector's timeout.
        async with db.transaction():
            await db.execute("LOCK TABLE campaign_hourly IN ACCESS EXCLUSIVE MODE")
            resp = await client.post("/v1/clicks", data=body, headers=AUTH)
            assert resp.status == 503
            assert BATCH_REJECTED_HEADER not in resp.headers  # the edge keeps the batch and retries
            assert await error(resp) == "database unavailable; retry later"
        assert await outcomes(client) == (rejected, db_errors + 1)
        assert await db.fetchval("SELECT count(*) FROM clicks WHERE campaign_id = $1", campaign_id) == 0
        resp = await client.post("/v1/clicks", data=body, headers=AUTH)  # the edge's retry
        assert await resp.json() == {"received": 5, "inserted": 5, "duplicates": 0, "refused": 0, "unsubscribes": 0}


async def test_a_database_that_goes_down_gets_503_without_the_header(database_url: str, campaign_id: int) -> None:
    target = urlsplit(database_url)
    async with proxy_to(target.port or 5432) as proxy:
        # The collector reaches PostgreSQL through a loopback relay the test can take away.
        via_proxy = database_url.replace(f"{target.hostname}:{target.port}", f"127.0.0.1:{proxy.port}")
        config = CollectorConfig(verdict_hold=0, database_url=via_proxy, ingest_secret=INGEST_SECRET)
        async with TestClient(TestServer(create_app(config))) as client:
            first = orjson.dumps(batch(campaign_id, 2))
            assert (await client.post("/v1/clicks", data=first, headers=AUTH)).status == 200  # a pooled connection
            await proxy.close()  # the database is gone: open connections reset, new ones refused
            rejected, db_errors = await outcomes(client)
            resp = await client.post("/v1/clicks", data=orjson.dumps(batch(campaign_id, 2)), headers=AUTH)
            assert resp.status == 503
            assert BATCH_REJECTED_HEADER not in resp.headers
            assert await error(resp) in ("database unavailable; retry later", "database error; retry later")
            assert await outcomes(client) == (rejected, db_errors + 1)
            assert (await client.get("/readyz")).status == 503


async def test_a_database_that_never_answered_gets_503_without_the_header() -> None:
    config = CollectorConfig(
        verdict_hold=0, database_url="postgresql://nobody@127.0.0.1:1/none", ingest_secret=INGEST_SECRET
    )
    async with TestClient(TestServer(create_app(config))) as client:
        assert (await client.get("/readyz")).status == 503
        resp = await client.post("/v1/clicks", data=orjson.dumps(batch(1, 1)), headers=AUTH)
        assert resp.status == 503
        assert BATCH_REJECTED_HEADER not in resp.headers
        assert await error(resp) == "database unavailable; retry later"
