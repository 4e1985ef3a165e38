"""The collector over a real socket against a real PostgreSQL: auth, validation, exactly-once writes."""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import AsyncIterator
from typing import Any

import asyncpg
import orjson
import pytest
from aiohttp.test_utils import TestClient, TestServer

from collector.app import create_app
from collector.config import CollectorConfig
from common.events import EventIds
from tests.collector.clock import RECENT_S, RECENT_US
from tests.collector.derived import recount, snapshot
from tests.conftest import INGEST_SECRET

AUTH = {"Authorization": f"Bearer {INGEST_SECRET}"}


@pytest.fixture
async def client(database_url: str) -> AsyncIterator[TestClient[Any, Any]]:
    config = CollectorConfig(verdict_hold=0, database_url=database_url, ingest_secret=INGEST_SECRET)
    async with TestClient(TestServer(create_app(config))) as client:
        yield client


def batch(campaign_id: int, n: int, *, contact_base: int = 1, at: int = RECENT_US) -> dict[str, Any]:
    ids = EventIds()
    ua = "Mozilla/5.0 (test)"
    rows = [
        [
            ids.next(at // 1000 + i),
            at + i * 1000,
            campaign_id,
            i % 3,
            contact_base + i,
            RECENT_S - 10_000,
            1,
            "198.51.100.7",
            ua,
            "HEAD" if i == 0 else "GET",
        ]
        for i in range(n)
    ]
    return {"v": 1, "edge": "test-edge", "clicks": rows}


async def metric(client: TestClient[Any, Any], name: str) -> float:
    text = await (await client.get("/metrics")).text()
    for line in text.splitlines():
        if line.startswith(name + " "):
            return float(line.split()[1])
    raise AssertionError(f"metric {name} not exported")


async def test_batch_is_written_with_every_field(
    client: TestClient[Any, Any], db: asyncpg.Connection, campaign_id: int
) -> None:
    doc = batch(campaign_id, 5)
    resp = await client.post("/v1/clicks", data=orjson.dumps(doc), headers=AUTH)
    assert resp.status == 200
    assert await resp.json() == {"received": 5, "inserted": 5, "duplicates": 0, "refused": 0, "unsubscribes": 0}
    rows = await db.fetch("SELECT * FROM clicks WHERE campaign_id = $1 ORDER BY contact_id", campaign_id)
    assert len(rows) == 5
    first = rows[0]
    assert first["event_id"] == uuid.UUID(doc["clicks"][0][0])
    assert first["clicked_at"].timestamp() == RECENT_S
    assert (first["link_id"], first["contact_id"], first["key_id"]) == (0, 1, 1)
    assert str(first["client_ip"]) == "198.51.100.0/24"  # its network only: privacy by default
    assert (first["user_agent"], first["method"], first["edge"]) == (
        "Mozilla/5.0 (test)",
        "HEAD",
        "test-edge",
    )
    # The HEAD request is a scanner's check: kept with its verdict, counted beside people's clicks.
    assert (first["verdict"], first["verdict_reasons"]) == ("scanner", ["head"])
    assert {r["verdict"] for r in rows[1:]} == {"human"}
    counts = await db.fetch(
        "SELECT link_id, clicks, scanner_clicks FROM link_click_counts WHERE campaign_id = $1 ORDER BY link_id",
        campaign_id,
    )
    assert [tuple(r) for r in counts] == [(0, 1, 1), (1, 2, 0), (2, 1, 0)]


async def test_redelivered_batch_changes_nothing(
    client: TestClient[Any, Any], db: asyncpg.Connection, campaign_id: int
) -> None:
    body = orjson.dumps(batch(campaign_id, 50))
    assert (await client.post("/v1/clicks", data=body, headers=AUTH)).status == 200
    before = await snapshot(db, campaign_id)
    assert len(before["clicks"]) == 50 and len(before["link_clickers"]) == 49 and before["campaign_hourly"]
    duplicates_before = await metric(client, "clickedge_collector_clicks_duplicate_total")

    resp = await client.post("/v1/clicks", data=body, headers=AUTH)
    assert resp.status == 200
    assert await resp.json() == {"received": 50, "inserted": 0, "duplicates": 50, "refused": 0, "unsubscribes": 0}
    assert await snapshot(db, campaign_id) == before
    assert await metric(client, "clickedge_collector_clicks_duplicate_total") == duplicates_before + 50


async def test_an_empty_batch_is_answered_and_counts_nothing(client: TestClient[Any, Any]) -> None:
    # The edge never sends one; a probe or another client may.
    names = ("clickedge_collector_clicks_received_total", "clickedge_collector_clicks_duplicate_total")
    before = [await metric(client, name) for name in names]
    resp = await client.post("/v1/clicks", data=orjson.dumps({"v": 1, "edge": "probe", "clicks": []}), headers=AUTH)
    assert resp.status == 200
    assert await resp.json() == {"received": 0, "inserted": 0, "duplicates": 0, "refused": 0, "unsubscribes": 0}
    assert [await metric(client, name) for name in names] == before


async def test_ingest_lag_is_measured_from_the_oldest_click_of_each_batch(
    client: TestClient[Any, Any], campaign_id: int
) -> None:
    count = await metric(client, "clickedge_collector_ingest_lag_seconds_count")
    lag_sum = await metric(client, "clickedge_collector_ingest_lag_seconds_sum")
    clicked = time.time() - 120  # two minutes in an edge's spool
    doc = batch(campaign_id, 20, at=int(clicked * 1e6))
    assert (await client.post("/v1/clicks", data=orjson.dumps(doc), headers=AUTH)).status == 200
    assert await metric(client, "clickedge_collector_ingest_lag_seconds_count") == count + 1
    added = await metric(client, "clickedge_collector_ingest_lag_seconds_sum") - lag_sum
    assert 120 <= added < time.time() - clicked + 1
    text = await (await client.get("/metrics")).text()
    assert 'clickedge_build_info{python="' in text and 'service="collector"' in text
    assert "clickedge_collector_database_up 1.0" in text


async def test_partly_new_batch_applies_only_the_new_rows(
    client: TestClient[Any, Any], db: asyncpg.Connection, campaign_id: int
) -> None:
    doc = batch(campaign_id, 4)
    first = {**doc, "clicks": doc["clicks"][:2]}
    assert (await client.post("/v1/clicks", data=orjson.dumps(first), headers=AUTH)).status == 200
    resp = await client.post("/v1/clicks", data=orjson.dumps(doc), headers=AUTH)
    assert await resp.json() == {"received": 4, "inserted": 2, "duplicates": 2, "refused": 0, "unsubscribes": 0}
    total = await db.fetchval(
        "SELECT sum(clicks + scanner_clicks) FROM link_click_counts WHERE campaign_id = $1", campaign_id
    )
    assert total == 4
    assert await recount(db, campaign_id) == {}


async def test_a_clickers_first_click_is_their_earliest_even_when_delivered_late(
    client: TestClient[Any, Any], db: asyncpg.Connection, campaign_id: int
) -> None:
    late = batch(campaign_id, 1, at=RECENT_US + 10_000_000)  # one edge ships a click at t + 10 s...
    early = batch(campaign_id, 1, at=RECENT_US)  # ...before another edge ships its click at t, on another link
    early["clicks"][0][3] = 7
    for doc in (late, early):
        doc["clicks"][0][9] = "GET"  # a person's click, not a HEAD check
    for doc in (late, early):
        assert (await client.post("/v1/clicks", data=orjson.dumps(doc), headers=AUTH)).status == 200
    first = await db.fetchval("SELECT first_click FROM campaign_clickers WHERE campaign_id = $1", campaign_id)
    assert first.timestamp() == RECENT_S


@pytest.mark.parametrize("headers", [{}, {"Authorization": "Bearer wrong-secret"}, {"Authorization": INGEST_SECRET}])
async def test_unauthenticated_batch_is_refused(
    client: TestClient[Any, Any], db: asyncpg.Connection, campaign_id: int, headers: dict[str, str]
) -> None:
    resp = await client.post("/v1/clicks", data=orjson.dumps(batch(campaign_id, 1)), headers=headers)
    assert resp.status == 401
    assert "ingest secret" in (await resp.json())["error"]
    assert await db.fetchval("SELECT count(*) FROM clicks WHERE campaign_id = $1", campaign_id) == 0


async def test_malformed_batch_gets_400_with_reason_and_writes_nothing(
    client: TestClient[Any, Any], db: asyncpg.Connection, campaign_id: int
) -> None:
    doc = batch(campaign_id, 3)
    doc["clicks"][2][9] = "DELETE"
    resp = await client.post("/v1/clicks", data=orjson.dumps(doc), headers=AUTH)
    assert resp.status == 400
    assert "clicks[2].method" in (await resp.json())["error"]
    resp = await client.post("/v1/clicks", data=b"{not json", headers=AUTH)
    assert resp.status == 400
    assert "not valid JSON" in (await resp.json())["error"]
    assert await db.fetchval("SELECT count(*) FROM clicks WHERE campaign_id = $1", campaign_id) == 0


async def test_oversized_body_is_refused(database_url: str) -> None:
    config = CollectorConfig(
        verdict_hold=0, database_url=database_url, ingest_secret=INGEST_SECRET, max_body_bytes=1024
    )
    async with TestClient(TestServer(create_app(config))) as client:
        resp = await client.post("/v1/clicks", data=b"[" + b" " * 4096 + b"]", headers=AUTH)
        assert resp.status == 413


async def test_health_and_readiness(client: TestClient[Any, Any]) -> None:
    assert (await client.get("/healthz")).status == 200
    assert (await client.get("/readyz")).status == 200


async def test_non_utf8_authorization_is_refused_not_a_500(client: TestClient[Any, Any]) -> None:
    server = client.server
    reader, writer = await asyncio.open_connection(server.host, server.port)
    writer.write(
        b"POST /v1/clicks HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer \xff\xfe\r\n"
        b"Content-Length: 2\r\nConnection: close\r\n\r\n{}"
    )
    await writer.drain()
    reply = await asyncio.wait_for(reader.read(), 5)
    writer.close()
    assert reply.split(b" ", 2)[1] == b"401", reply[:200]


async def test_several_collectors_at_once_write_each_click_once(
    database_url: str, db: asyncpg.Connection, campaign_id: int
) -> None:
    config = CollectorConfig(verdict_hold=0, database_url=database_url, ingest_secret=INGEST_SECRET)
    async with (
        TestClient(TestServer(create_app(config))) as a,
        TestClient(TestServer(create_app(config))) as b,
    ):
        bodies = [orjson.dumps(batch(campaign_id, 200, contact_base=1 + 1000 * i)) for i in range(4)]
        # Every batch to both collectors, all at once: as when an edge retries on another collector while
        # the first is still committing.
        sends = [c.post("/v1/clicks", data=body, headers=AUTH) for body in bodies for c in (a, b, a, b)]
        replies = await asyncio.gather(*sends)
        assert all(r.status == 200 for r in replies)
        inserted = sum([(await r.json())["inserted"] for r in replies])
        assert inserted == 800
    assert await db.fetchval("SELECT count(*) FROM clicks WHERE campaign_id = $1", campaign_id) == 800
    total = await db.fetchval(
        "SELECT sum(clicks + scanner_clicks) FROM link_click_counts WHERE campaign_id = $1", campaign_id
    )
    assert total == 800
    assert await recount(db, campaign_id) == {}  # every report table, not only the click counts
