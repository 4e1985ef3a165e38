"""The kill switch, end to end: two real edges and a real collector over real sockets. A block made through
the admin API reaches both edges within 10 s (links already minted, that is already in inboxes, answer 410
with a page that names no destination; each request is recorded as blocked and counted); it survives the
collector going away and an edge restarting without it; lifting it lets the links redirect again."""

from __future__ import annotations

import ipaddress
import re
import shutil
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import asyncpg
import pytest
from aiohttp.test_utils import TestServer

from clickedge.pgembed import free_port
from collector import apikeys
from collector.app import create_app
from collector.config import CollectorConfig
from edge.config import EdgeConfig
from edge.main import RunningEdge, shutdown, start
from links import keys
from links.token import TokenCodec
from tests.conftest import INGEST_SECRET, eventually

POLL = 0.3  # seconds between the edges' fetches (default 5): the test waits less, the bound is the same


def edge_config(data_dir: Path, collector_port: int) -> EdgeConfig:
    return EdgeConfig(
        port=0,
        data_dir=data_dir,
        collector_url=f"http://127.0.0.1:{collector_port}",
        batch_linger=0.05,
        blocklist_poll=POLL,
        trusted_proxies=(ipaddress.ip_network("127.0.0.1/32"),),
    )


class Site:
    """A collector and two edges sharing its link keys."""

    def __init__(self, database_url: str, root: Path) -> None:
        self.database_url = database_url
        self.root = root
        self.collector_port = free_port()
        self.collector: TestServer | None = None
        self.edges: list[RunningEdge] = []
        self.dirs = [root / "edge-a", root / "edge-b"]
        for d in self.dirs[1:]:
            d.mkdir()
            shutil.copy(self.dirs[0] / "keys.json", d / "keys.json")
            shutil.copy(self.dirs[0] / "ingest.secret", d / "ingest.secret")
        self.codec: TokenCodec = keys.load(self.dirs[0] / "keys.json").codec()

    async def start_collector(self) -> None:
        config = CollectorConfig(
            database_url=self.database_url, ingest_secret=INGEST_SECRET, data_dir=self.root / "collector"
        )
        self.collector = TestServer(create_app(config), port=self.collector_port)
        await self.collector.start_server()

    async def stop_collector(self) -> None:
        assert self.collector is not None
        await self.collector.close()
        self.collector = None

    async def start_edge(self, index: int) -> None:
        edge = await start(edge_config(self.dirs[index], self.collector_port), reuse_port=False)
        if index < len(self.edges):
            self.edges[index] = edge
        else:
            self.edges.append(edge)

    async def stop_edge(self, index: int) -> None:
        await shutdown(self.edges[index], grace=0, timeout=2)

    def url(self, index: int, token: str) -> str:
        return f"http://127.0.0.1:{self.edges[index].port}/c/{token}"


@pytest.fixture
async def site(database_url: str, data_dir: Path) -> AsyncIterator[Site]:
    (data_dir / "edge-a").mkdir()
    for name in ("keys.json", "ingest.secret"):
        shutil.move(data_dir / name, data_dir / "edge-a" / name)
    s = Site(database_url, data_dir)
    await s.start_collector()
    await s.start_edge(0)
    await s.start_edge(1)
    try:
        yield s
    finally:
        for edge in s.edges:
            await shutdown(edge, grace=0, timeout=2)
        if s.collector is not None:
            await s.collector.close()


async def status(http: aiohttp.ClientSession, url: str) -> tuple[int, str]:
    async with http.get(url, allow_redirects=False) as resp:
        return resp.status, await resp.text()


async def admin(site: Site, db: asyncpg.Connection, method: str, path: str, **body: object) -> tuple[int, Any]:
    key = await apikeys.create(db, "kill-switch", ["write"])
    assert site.collector is not None
    async with (
        aiohttp.ClientSession() as http,
        http.request(
            method,
            f"http://127.0.0.1:{site.collector.port}{path}",
            json=body or None,
            headers={"Authorization": f"Bearer {key}"},
        ) as resp,
    ):
        return resp.status, await resp.json()


async def test_a_block_reaches_both_edges_and_holds_without_the_collector(
    site: Site, db: asyncpg.Connection, campaign_id: int
) -> None:
    now = int(time.time())
    blocked = site.codec.mint("https://shop.example/a", campaign_id=campaign_id, link_id=1, contact_id=7, sent_at=now)
    other = site.codec.mint("https://shop.example/b", campaign_id=campaign_id, link_id=2, contact_id=7, sent_at=now)
    phish = site.codec.mint(
        "https://login.phish.example/x?y=1", campaign_id=campaign_id, link_id=9, contact_id=7, sent_at=now
    )
    async with aiohttp.ClientSession() as http:
        assert [(await status(http, site.url(i, blocked)))[0] for i in (0, 1)] == [302, 302]

        made, block = await admin(site, db, "POST", "/v1/blocks", campaign_id=campaign_id, link_id=1, reason="phish")
        assert made == 201 and block["blocked_by"].startswith("api:")
        started = time.monotonic()

        async def everywhere() -> bool:
            return [(await status(http, site.url(i, blocked)))[0] for i in (0, 1)] == [410, 410]

        await eventually(everywhere, timeout=10)
        assert time.monotonic() - started < 10
        code, page = await status(http, site.url(0, blocked))
        assert code == 410 and "shop.example" not in page and "disabled" in page
        assert (await status(http, site.url(1, other)))[0] == 302  # the campaign's other link still works

        # A destination host: that host and the hosts under it.
        made, host_block = await admin(site, db, "POST", "/v1/blocks", destination_host="Phish.Example.", reason="x")
        assert made == 201 and host_block["destination_host"] == "phish.example"

        async def host_blocked() -> bool:
            return (await status(http, site.url(1, phish)))[0] == 410

        await eventually(host_blocked, timeout=10)

        # Each blocked request is recorded, as blocked, and counted at the edge.
        async def recorded() -> int:
            n: int = await db.fetchval(
                "SELECT count(*) FROM refused_clicks WHERE campaign_id = $1 AND reason = 'blocked'", campaign_id
            )
            return n

        assert await eventually(recorded, timeout=10) >= 2
        metrics = await status(http, f"http://127.0.0.1:{site.edges[0].port}/metrics")
        found = re.search(r'clickedge_edge_requests_total\{outcome="blocked",worker="0"\} (\S+)', metrics[1])
        assert found is not None and float(found[1]) >= 1

        # The collector goes away; an edge restarts without it: the block holds, from the first request.
        await site.stop_collector()
        await site.stop_edge(1)
        await site.start_edge(1)
        assert (await status(http, site.url(1, blocked)))[0] == 410
        assert (await status(http, site.url(0, blocked)))[0] == 410

        # Back, and the block lifted: both edges redirect again.
        await site.start_collector()
        lifted, _ = await admin(site, db, "DELETE", f"/v1/blocks/{block['id']}")
        assert lifted == 200

        async def redirected() -> bool:
            return [(await status(http, site.url(i, blocked)))[0] for i in (0, 1)] == [302, 302]

        await eventually(redirected, timeout=10)
        again, _ = await admin(site, db, "DELETE", f"/v1/blocks/{block['id']}")
        assert again == 404
        assert (await admin(site, db, "DELETE", f"/v1/blocks/{host_block['id']}"))[0] == 200
