"""Clicks far from the collector's clock are refused (kept aside once, counted, the batch acknowledged),
and partition maintenance moves clicks that reached the default partition into their month's partition."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from typing import Any

import asyncpg
import orjson
import pytest
from aiohttp.test_utils import TestClient, TestServer

from collector.app import create_app
from collector.config import CollectorConfig
from collector.ingest import FUTURE, TOO_OLD, check_clock
from common.events import Click, EventIds, now_us
from tests.collector.derived import snapshot
from tests.conftest import INGEST_SECRET, eventually

AUTH = {"Authorization": f"Bearer {INGEST_SECRET}"}
DAY_US = 86_400_000_000
PARTITIONS_LOCK = "SELECT pg_advisory_lock(hashtext('clickedge.click_partitions'))"
PARTITIONS_UNLOCK = "SELECT pg_advisory_unlock(hashtext('clickedge.click_partitions'))"


def click(at_us: int) -> Click:
    return Click(bytes(16), at_us, 1, 1, None, 0, 1, None, "ua", "GET", None)


def test_check_clock_refuses_clicks_ahead_of_the_clock_or_too_old() -> None:
    now, skew, age = 1_800_000_000_000_000, 300_000_000, 366 * DAY_US
    ok = [click(now), click(now + skew), click(now - age), click(now - DAY_US)]
    ahead, old, far = click(now + skew + 1), click(now - age - 1), click((2**32 - 1) * 1_000_000)
    accepted, refused = check_clock([ok[0], ahead, ok[1], old, ok[2], far, ok[3]], now, skew, age)
    assert accepted == ok
    assert [(r.click, r.reason) for r in refused] == [(ahead, FUTURE), (old, TOO_OLD), (far, FUTURE)]
    clicks = [click(now)]
    assert check_clock(clicks, now, skew, age)[0] is clicks  # nothing refused: the batch as it came


def row(ids: EventIds, campaign_id: int, at_us: int, contact: int | None, ip: str = "192.0.2.1") -> list[Any]:
    return [ids.next(at_us // 1000), at_us, campaign_id, 1, contact, 1_700_000_000, 3, ip, "ua/1", "GET"]


@pytest.fixture
async def client(database_url: str) -> AsyncIterator[TestClient[Any, Any]]:
    config = CollectorConfig(verdict_hold=0, database_url=database_url, ingest_secret=INGEST_SECRET)
    async with TestClient(TestServer(create_app(config))) as client:
        yield client


async def scrape(client: TestClient[Any, Any], series: str) -> float:
    for line in (await (await client.get("/metrics")).text()).splitlines():
        if line.startswith(series + " "):
            return float(line.split()[1])
    raise AssertionError(f"{series} not exported")


async def test_clicks_far_from_the_collectors_clock_are_refused_once_and_the_batch_acknowledged(
    client: TestClient[Any, Any], db: asyncpg.Connection, campaign_id: int
) -> None:
    ids, now = EventIds(), now_us()
    rows = [
        row(ids, campaign_id, now - 3_600_000_000, 7),  # an hour ago: fine
        row(ids, campaign_id, now + DAY_US, 7),  # an edge whose clock is a day ahead
        row(ids, campaign_id, (2**32 - 1) * 1_000_000, None, ""),  # the year 2106, anonymous, no address
        row(ids, campaign_id, now - 400 * DAY_US, 8, "2001:db8::1"),  # older than the 366 days kept
    ]
    body = orjson.dumps({"v": 1, "edge": "edge-with-a-bad-clock", "clicks": rows})
    resp = await client.post("/v1/clicks", data=body, headers=AUTH)
    assert resp.status == 200  # acknowledged: the edge's spool moves on
    assert await resp.json() == {"received": 4, "inserted": 1, "duplicates": 0, "refused": 3, "unsubscribes": 0}
    assert await db.fetchval("SELECT count(*) FROM clicks WHERE campaign_id = $1", campaign_id) == 1
    kept = await db.fetch(
        "SELECT * FROM refused_clicks WHERE campaign_id = $1 ORDER BY clicked_at_us, event_id", campaign_id
    )
    assert [(r["reason"], r["clicked_at_us"], r["contact_id"]) for r in kept] == [
        (TOO_OLD, rows[3][1], 8),
        (FUTURE, rows[1][1], 7),
        (FUTURE, rows[2][1], None),
    ]
    too_old = kept[0]
    assert too_old["event_id"] == uuid.UUID(rows[3][0])
    assert (too_old["edge"], too_old["link_id"], too_old["sent_at"], too_old["key_id"]) == (
        "edge-with-a-bad-clock",
        1,
        1_700_000_000,
        3,
    )
    # The values as sent, but for the address: its network only (privacy by default, docs/privacy.md).
    assert (str(too_old["client_ip"]), too_old["user_agent"], too_old["method"]) == ("2001:db8::/48", "ua/1", "GET")
    assert kept[2]["client_ip"] is None
    refused = 'clickedge_collector_clicks_refused_total{reason="%s"}'
    assert (await scrape(client, refused % "future"), await scrape(client, refused % "too_old")) == (2, 1)

    # Delivered again (the reply was lost): nothing is written or counted twice.
    before = await snapshot(db, campaign_id)
    resp = await client.post("/v1/clicks", data=body, headers=AUTH)
    assert await resp.json() == {"received": 4, "inserted": 0, "duplicates": 1, "refused": 3, "unsubscribes": 0}
    assert await snapshot(db, campaign_id) == before
    assert (await scrape(client, refused % "future"), await scrape(client, refused % "too_old")) == (2, 1)

    # A batch of refused clicks only is acknowledged too.
    only = orjson.dumps({"v": 1, "edge": "e", "clicks": [row(ids, campaign_id, now + DAY_US, 9)]})
    resp = await client.post("/v1/clicks", data=only, headers=AUTH)
    assert resp.status == 200 and (await resp.json())["refused"] == 1


def months_ago(n: int) -> datetime:
    today = datetime.now(UTC)
    year, month = divmod(today.year * 12 + today.month - 1 - n, 12)
    return datetime(year, month + 1, 1, tzinfo=UTC)


async def test_partition_maintenance_moves_default_rows_into_their_months_partition(
    database_url: str, db: asyncpg.Connection, campaign_id: int
) -> None:
    month = months_ago(9)  # a month with no partition: maintenance makes them from a month back only
    name = f"clicks_{month:%Y_%m}"
    in_partition = f"SELECT count(*) FROM {name} WHERE campaign_id = $1"  # noqa: S608 - a name made here
    if await db.fetchval("SELECT to_regclass($1) IS NOT NULL", name):  # an external database, used before
        await db.execute(f"ALTER TABLE clicks DETACH PARTITION {name}; DROP TABLE {name}")
    # Hold partition maintenance back until the clicks are in the default partition and counted there.
    await db.execute(PARTITIONS_LOCK)
    locked = True
    try:
        config = CollectorConfig(verdict_hold=0, database_url=database_url, ingest_secret=INGEST_SECRET)
        async with TestClient(TestServer(create_app(config))) as client:
            ids, at_us = EventIds(), int(month.timestamp() * 1e6) + DAY_US
            body = orjson.dumps(
                {"v": 1, "edge": "e", "clicks": [row(ids, campaign_id, at_us + n, n + 1) for n in range(3)]}
            )
            resp = await client.post("/v1/clicks", data=body, headers=AUTH)
            assert await resp.json() == {"received": 3, "inserted": 3, "duplicates": 0, "refused": 0, "unsubscribes": 0}
            in_default = "SELECT count(*) FROM clicks_default WHERE campaign_id = $1"
            assert await db.fetchval(in_default, campaign_id) == 3
            assert await scrape(client, "clickedge_collector_default_partition_rows") >= 3

            await db.execute(PARTITIONS_UNLOCK)  # the collector's maintenance, waiting since its start, goes on
            locked = False

            async def moved() -> bool:
                return await scrape(client, "clickedge_collector_default_partition_rows") == 0

            await eventually(moved, timeout=30)
            assert await db.fetchval("SELECT relispartition FROM pg_class WHERE oid = to_regclass($1)", name)
            assert await db.fetchval(in_default, campaign_id) == 0
            assert await db.fetchval(in_partition, campaign_id) == 3
            assert await db.fetchval("SELECT count(*) FROM clicks WHERE campaign_id = $1", campaign_id) == 3
            # Still exactly once: the batch again is three duplicates, and a new click goes to the partition.
            before = await snapshot(db, campaign_id)
            resp = await client.post("/v1/clicks", data=body, headers=AUTH)
            assert await resp.json() == {"received": 3, "inserted": 0, "duplicates": 3, "refused": 0, "unsubscribes": 0}
            assert await snapshot(db, campaign_id) == before
            more = orjson.dumps({"v": 1, "edge": "e", "clicks": [row(ids, campaign_id, at_us + 10, 9)]})
            assert (await client.post("/v1/clicks", data=more, headers=AUTH)).status == 200
            assert await db.fetchval(in_partition, campaign_id) == 4
    finally:
        if locked:
            await db.execute(PARTITIONS_UNLOCK)
