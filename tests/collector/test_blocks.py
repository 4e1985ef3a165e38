"""The kill switch in the collector (collector/blocks.py): the admin API and the command line make and lift
blocks, with who, when and why, refusing what is not a block; edges fetch the active list with the ingest
secret and an ETag."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import asyncpg
import orjson
import pytest
from aiohttp.test_utils import TestClient, TestServer

from collector import apikeys, blocks
from collector.app import create_app
from collector.config import CollectorConfig
from common.events import EDGE_BLOCKLIST_PATH
from tests.clickedge.test_cli import clickedge
from tests.conftest import INGEST_SECRET

EDGE = {"Authorization": f"Bearer {INGEST_SECRET}"}


@pytest.fixture
async def client(database_url: str, tmp_path: Path) -> AsyncIterator[TestClient[Any, Any]]:
    config = CollectorConfig(database_url=database_url, ingest_secret=INGEST_SECRET, data_dir=tmp_path)
    async with TestClient(TestServer(create_app(config))) as client:
        yield client


async def auth(db: asyncpg.Connection, scope: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {await apikeys.create(db, 'blocks', [scope])}"}


async def test_bad_blocks_are_refused_saying_why(
    client: TestClient[Any, Any], db: asyncpg.Connection, campaign_id: int
) -> None:
    write = await auth(db, "write")
    for body, said in (
        ({"campaign_id": campaign_id}, "reason"),
        ({"campaign_id": campaign_id, "reason": " "}, "reason"),
        ({"reason": "x"}, "names campaign_id"),
        ({"link_id": 1, "reason": "x"}, "names campaign_id"),
        ({"campaign_id": campaign_id, "destination_host": "a.example", "reason": "x"}, "not both"),
        ({"destination_host": "https://a.example/x", "reason": "x"}, "host name only"),
        ({"campaign_id": -1, "reason": "x"}, "campaign_id must be"),
        ({"campaign_id": "7", "reason": "x"}, "campaign_id must be"),
        ({"campaign_id": campaign_id, "reason": "x" * 501}, "reason"),
        ({"campaign_id": campaign_id, "reason": "x", "color": "red"}, "unknown fields: color"),
    ):
        resp = await client.post("/v1/blocks", json=body, headers=write)
        assert resp.status == 400, body
        assert said in (await resp.json())["error"], body
    read = await auth(db, "read")
    assert (await client.post("/v1/blocks", json={"campaign_id": 1, "reason": "x"}, headers=read)).status == 403
    assert (await client.delete("/v1/blocks/abc", headers=write)).status == 400
    assert (await client.get("/v1/blocks?lifted=maybe", headers=read)).status == 400


async def test_edges_fetch_the_active_list_with_an_etag(
    client: TestClient[Any, Any], db: asyncpg.Connection, campaign_id: int
) -> None:
    assert (await client.get(EDGE_BLOCKLIST_PATH)).status == 401
    assert (await client.get(EDGE_BLOCKLIST_PATH, headers={"Authorization": "Bearer nope"})).status == 401
    write = await auth(db, "write")
    made = await client.post("/v1/blocks", json={"campaign_id": campaign_id, "reason": "test"}, headers=write)
    assert made.status == 201
    again = await client.post("/v1/blocks", json={"campaign_id": campaign_id, "reason": "twice"}, headers=write)
    assert again.status == 200 and (await again.json())["reason"] == "test"  # the first block stays
    first = await client.get(EDGE_BLOCKLIST_PATH, headers=EDGE)
    assert first.status == 200 and campaign_id in orjson.loads(await first.read())["campaigns"]
    etag = first.headers["ETag"]
    same = await client.get(EDGE_BLOCKLIST_PATH, headers={**EDGE, "If-None-Match": etag})
    assert same.status == 304
    block_id = (await made.json())["id"]
    assert (await client.delete(f"/v1/blocks/{block_id}", headers=write)).status == 200
    changed = await client.get(EDGE_BLOCKLIST_PATH, headers={**EDGE, "If-None-Match": etag})
    assert changed.status == 200 and campaign_id not in orjson.loads(await changed.read())["campaigns"]
    history = await client.get("/v1/blocks?lifted=true", headers=await auth(db, "read"))
    [lifted] = [b for b in (await history.json())["blocks"] if b["id"] == block_id]
    assert lifted["unblocked_by"].startswith("api:") and lifted["unblocked_at"] is not None


def test_an_edge_list_names_each_target_once() -> None:
    rows = [
        {"campaign_id": 1, "link_id": None, "destination_host": None},
        {"campaign_id": 2, "link_id": 5, "destination_host": None},
        {"campaign_id": None, "link_id": None, "destination_host": "a.example"},
    ]
    listed = blocks.edge_list(rows)
    assert orjson.loads(listed.body) == {"campaigns": [1], "links": [[2, 5]], "hosts": ["a.example"]}
    assert listed.etag == blocks.edge_list(list(reversed(rows))).etag
    assert blocks.normalize_host(" Bücher.Example. ") == "xn--bcher-kva.example"


async def test_clickedge_block_and_unblock(db: asyncpg.Connection, database_url: str, campaign_id: int) -> None:
    dsn = ("--database-url", database_url)
    made = clickedge("block", "--campaign", str(campaign_id), "--link", "3", "--reason", "phishing report", *dsn)
    assert made.returncode == 0, made.stderr
    assert orjson.loads(made.stdout)["link_id"] == 3 and "is blocked" in made.stderr
    listed = clickedge("block", "--list", *dsn)
    assert any(b["campaign_id"] == campaign_id for b in orjson.loads(listed.stdout))
    for args, said in (
        (("--campaign", str(campaign_id)), "--reason is required"),
        (("--link", "3", "--reason", "x"), "--link goes with --campaign"),
        (("--campaign", "1", "--destination-host", "a.example", "--reason", "x"), "not both"),
        (("--destination-host", "a/b", "--reason", "x"), "host name only"),
    ):
        bad = clickedge("block", *args, *dsn)
        assert bad.returncode == 2 and said in bad.stderr, (args, bad.stderr)
    lifted = clickedge("unblock", "--campaign", str(campaign_id), "--link", "3", *dsn)
    assert lifted.returncode == 0, lifted.stderr
    assert orjson.loads(lifted.stdout)["unblocked_by"].startswith("cli:")
    twice = clickedge("unblock", "--campaign", str(campaign_id), "--link", "3", *dsn)
    assert twice.returncode == 2 and "is not blocked" in twice.stderr
