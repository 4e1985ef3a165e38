"""Mint -> HTTP click on a real edge -> batch to a real collector -> row in a real PostgreSQL."""

from __future__ import annotations

import ipaddress
import time
from pathlib import Path

import aiohttp
import asyncpg
from aiohttp.test_utils import TestServer

from collector.app import create_app
from collector.config import CollectorConfig
from common.signals import describe
from edge.config import EdgeConfig
from edge.main import shutdown, start
from links import keys
from tests.conftest import INGEST_SECRET, eventually

URL = "https://shop.example.com/pricing?utm_source=news#plans"


async def test_click_arrives_in_postgres_with_the_right_fields(
    database_url: str, db: asyncpg.Connection, data_dir: Path, campaign_id: int
) -> None:
    collector = TestServer(
        create_app(CollectorConfig(verdict_hold=0, database_url=database_url, ingest_secret=INGEST_SECRET))
    )
    await collector.start_server()
    config = EdgeConfig(
        port=0,
        data_dir=data_dir,
        collector_url=f"http://127.0.0.1:{collector.port}",
        batch_linger=0.05,
        trusted_proxies=(ipaddress.ip_network("127.0.0.1/32"),),
    )
    edge = await start(config, reuse_port=False)
    try:
        codec = keys.load(data_dir / "keys.json").codec()
        sent_at = int(time.time()) - 60
        named = codec.mint(URL, campaign_id=campaign_id, link_id=3, contact_id=42, sent_at=sent_at)
        anonymous = codec.mint(URL, campaign_id=campaign_id, link_id=4, contact_id=None, sent_at=sent_at)
        base = f"http://127.0.0.1:{edge.port}/c/"
        before = time.time()
        async with aiohttp.ClientSession() as http:
            headers = {
                "User-Agent": "Mozilla/5.0 e2e",
                "X-Forwarded-For": "203.0.113.50",
                "Accept": "text/html,*/*;q=0.8",
                "Sec-Fetch-Site": "cross-site",
                "Sec-Fetch-Mode": "navigate",
            }
            async with http.get(base + named, headers=headers, allow_redirects=False) as resp:
                assert resp.status == 302 and resp.headers["Location"] == URL
            async with http.head(base + named, allow_redirects=False) as resp:
                assert resp.status == 302
            async with http.get(base + anonymous, allow_redirects=False) as resp:
                assert resp.status == 302
            async with http.get(base + named[:-3] + "xyz", allow_redirects=False) as resp:
                assert resp.status in (400, 404)

        async def rows() -> list[asyncpg.Record]:
            found = await db.fetch("SELECT * FROM clicks WHERE campaign_id = $1 ORDER BY clicked_at", campaign_id)
            return found if len(found) >= 3 else []

        got = await eventually(rows, timeout=10)
        assert len(got) == 3  # the invalid link left no row
        get, head, anon = got
        assert (get["campaign_id"], get["link_id"], get["contact_id"]) == (campaign_id, 3, 42)
        assert get["method"] == "GET" and head["method"] == "HEAD"
        # The address the edge took from X-Forwarded-For (the HEAD's: the peer), stored as its network.
        assert get["client_ip"] == ipaddress.ip_interface("203.0.113.0/24")
        assert head["client_ip"] == ipaddress.ip_interface("127.0.0.0/24")
        assert get["user_agent"] == "Mozilla/5.0 e2e"
        assert describe(get["signals"]) == ["accept-html", "fetch-navigate", "fetch-site"]
        assert describe(head["signals"]) == []  # aiohttp's HEAD: Accept */* only
        assert get["sent_at"].timestamp() == sent_at
        assert before - 1 <= get["clicked_at"].timestamp() <= time.time()
        assert get["event_id"] != head["event_id"]
        assert get["key_id"] == 1
        assert (anon["link_id"], anon["contact_id"]) == (4, 0)  # 0: anonymous
    finally:
        assert await shutdown(edge, grace=0, timeout=5) == 0
        await collector.close()
