"""A batch as the edge ships it: its spool's own records (``application/x-clickedge-spool``), over a real socket
against a real PostgreSQL. The collector checks every record's frame and CRC before it reads a payload, stores
the same rows as for the same clicks in JSON, and refuses a damaged batch whole with a 400 that names the
record and carries the header that makes the edge set it aside."""

from __future__ import annotations

import io
from collections.abc import AsyncIterator
from typing import Any

import asyncpg
import orjson
import pytest
from aiohttp.test_utils import TestClient, TestServer

from collector.app import create_app
from collector.config import CollectorConfig
from common.events import BATCH_REJECTED_HEADER, EDGE_HEADER, SPOOL_CONTENT_TYPE
from common.frames import frame, walk
from tests.collector.test_ingest import AUTH, batch, metric
from tests.conftest import INGEST_SECRET

REJECTED = 'clickedge_collector_batches_total{outcome="rejected"}'


@pytest.fixture
async def client(database_url: str) -> AsyncIterator[TestClient[Any, Any]]:
    config = CollectorConfig(verdict_hold=0, database_url=database_url, ingest_secret=INGEST_SECRET)
    async with TestClient(TestServer(create_app(config))) as client:
        yield client


def spooled(doc: dict[str, Any]) -> bytes:
    """A JSON batch's clicks as an edge's spool frames them."""
    return b"".join(frame(bytes.fromhex(row[0]), orjson.dumps(row[1:])) for row in doc["clicks"])


def headers(edge: str = "spool-edge") -> dict[str, str]:
    return {**AUTH, "Content-Type": SPOOL_CONTENT_TYPE, EDGE_HEADER: edge}


async def stored(db: asyncpg.Connection, campaign_id: int) -> list[tuple[Any, ...]]:
    rows = await db.fetch(
        """SELECT event_id, clicked_at, link_id, contact_id, client_ip, user_agent, method, edge
           FROM clicks WHERE campaign_id = $1 ORDER BY event_id""",
        campaign_id,
    )
    return [tuple(r) for r in rows]


async def test_spooled_records_are_stored_as_the_same_clicks_in_json_would_be(
    client: TestClient[Any, Any], db: asyncpg.Connection, campaign_id: int
) -> None:
    doc = batch(campaign_id, 5, contact_base=campaign_id * 10)
    body = spooled(doc)
    resp = await client.post("/v1/clicks", data=body, headers=headers())
    assert resp.status == 200, await resp.text()
    assert (await resp.json())["inserted"] == 5
    rows = await stored(db, campaign_id)
    assert [r[-1] for r in rows] == ["spool-edge"] * 5  # the edge's name, from its header
    # Sent again (a reply lost after COMMIT): all duplicates, nothing stored twice.
    again = await client.post("/v1/clicks", data=body, headers=headers())
    assert again.status == 200 and (await again.json())["duplicates"] == 5
    # The same clicks in JSON (other event ids): every stored field the same.
    for row in doc["clicks"]:
        row[0] = "f" + row[0][1:]
    doc["edge"] = "spool-edge"
    assert (await client.post("/v1/clicks", data=orjson.dumps(doc), headers=AUTH)).status == 200
    both = await stored(db, campaign_id)
    assert len(both) == 10
    assert sorted(r[1:] for r in both[:5]) == sorted(r[1:] for r in both[5:])


def damaged(body: bytes, at: int) -> bytes:
    return body[:at] + bytes([body[at] ^ 0x01]) + body[at + 1 :]


@pytest.mark.parametrize(
    ("name", "make_body", "edge", "why"),
    [
        ("a flipped bit", lambda b: damaged(b, len(b) - 3), "e", "records[2] at byte"),
        ("a cut-off record", lambda b: b[:-1], "e", "is cut off"),
        ("bytes that are no record", lambda b: b + b"GET / HTTP/1.1\r\nHost: collector\r\n\r\n", "e", "record magic"),
        ("a payload that is no click", lambda b: b + frame(bytes(16), b'["not", "a", "click"]'), "e", "clicks[3]"),
        (
            "a payload that is no JSON",
            lambda b: b + frame(bytes(16), b"[1,"),
            "e",
            "clicks[3] payload is not valid JSON",
        ),
        ("no edge name", lambda b: b, "", "'edge' must be"),
        ("an edge name too long", lambda b: b, "e" * 65, "'edge' must be"),
    ],
)
async def test_a_damaged_or_invalid_spooled_batch_is_refused_whole_with_400_and_the_header(
    client: TestClient[Any, Any],
    db: asyncpg.Connection,
    campaign_id: int,
    name: str,
    make_body: Any,
    edge: str,
    why: str,
) -> None:
    body = make_body(spooled(batch(campaign_id, 3, contact_base=campaign_id * 10)))
    before = await metric(client, REJECTED)
    resp = await client.post("/v1/clicks", data=body, headers=headers(edge))
    assert resp.status == 400, name
    assert resp.headers.get(BATCH_REJECTED_HEADER) is not None, name  # the edge sets it aside, no retry
    assert why in (await resp.json())["error"], name
    assert await metric(client, REJECTED) == before + 1
    assert await stored(db, campaign_id) == []  # nothing of it written


async def test_the_damage_is_named_by_record_and_byte(client: TestClient[Any, Any], campaign_id: int) -> None:
    body = spooled(batch(campaign_id, 3, contact_base=campaign_id * 10))
    second = walk(body, 1, len(body))[0]  # where the second record starts
    resp = await client.post("/v1/clicks", data=damaged(body, second + 30), headers=headers())
    assert (await resp.json())["error"] == (
        f"records[1] at byte {second} fails its CRC-32: damaged on the way or on disk"
    )


async def test_more_records_than_a_batch_may_hold_are_refused(client: TestClient[Any, Any], campaign_id: int) -> None:
    one = spooled(batch(campaign_id, 1, contact_base=campaign_id * 10))
    resp = await client.post("/v1/clicks", data=io.BytesIO(one * 10_001), headers=headers())
    assert resp.status == 400
    assert "at most 10000" in (await resp.json())["error"]
