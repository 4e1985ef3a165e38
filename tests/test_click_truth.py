"""Click truth end to end: tokens clicked on a real edge, shipped to a real collector whose settler gives the
verdicts after its hold, rows and actions in a real PostgreSQL.

A scanner's burst and a person's later click (the person's action fires once, the scanner's none); a contact
whose only clicks were a scanner's (no action, not a clicker); a decoy link's fetch. Times are real: a click's
time is the edge's clock; only the send time in each token is chosen.
"""

from __future__ import annotations

import ipaddress
import re
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp
import asyncpg
import orjson
import pytest
from aiohttp.test_utils import TestServer

from collector import apikeys, campaigns, sending
from collector.agents import current_version
from collector.app import create_app
from collector.config import CollectorConfig
from edge.config import EdgeConfig
from edge.main import RunningEdge, shutdown, start
from links import keys
from links.rewrite import LinkSlot, prepare
from links.token import TokenCodec
from tests.conftest import INGEST_SECRET, eventually

NOW_CHROME = current_version("Chrome", time.time())
PERSON = {
    "User-Agent": f"Mozilla/5.0 (Macintosh; Intel Mac OS X 10_15_7) AppleWebKit/537.36 (KHTML, like Gecko) "
    f"Chrome/{NOW_CHROME}.0.0.0 Safari/537.36",
    "Accept": "text/html,application/xhtml+xml,application/xml;q=0.9,*/*;q=0.8",
    "Accept-Language": "en-GB,en;q=0.9",
    "Sec-Fetch-Site": "cross-site",
    "Sec-Fetch-Mode": "navigate",
    "Sec-Fetch-Dest": "document",
    "Sec-Fetch-User": "?1",
    "X-Forwarded-For": "100.70.1.2",
}
# Defender's sandbox as seen in the field: Microsoft's mail-filtering network, a Chrome nine versions old.
SCANNER = {
    **PERSON,
    "User-Agent": f"Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) "
    f"Chrome/{NOW_CHROME - 9}.0.0.0 Safari/537.36",
    "X-Forwarded-For": "40.92.17.3",
}
ACTION = [{"type": "add_tag", "tag": "wants-pricing"}]
BURST_WINDOW = 0.5  # seconds: the test's clicks further apart than this are not one burst


@dataclass
class Stack:
    edge: RunningEdge
    collector: TestServer
    codec: TokenCodec

    @property
    def edge_url(self) -> str:
        return f"http://127.0.0.1:{self.edge.port}"


@pytest.fixture
async def stack(database_url: str, data_dir: Path) -> AsyncIterator[Stack]:
    config = CollectorConfig(
        database_url=database_url,
        ingest_secret=INGEST_SECRET,
        data_dir=data_dir,
        verdict_hold=1.0,
        verdict_burst_window=BURST_WINDOW,
    )
    collector = TestServer(create_app(config))
    await collector.start_server()
    edge = await start(
        EdgeConfig(
            port=0,
            data_dir=data_dir,
            collector_url=f"http://127.0.0.1:{collector.port}",
            batch_linger=0.05,
            trusted_proxies=(ipaddress.ip_network("127.0.0.1/32"),),
        ),
        reuse_port=False,
    )
    try:
        yield Stack(edge, collector, keys.load(data_dir / "keys.json").codec())
    finally:
        assert await shutdown(edge, grace=0, timeout=5) == 0
        await collector.close()


async def register(db: asyncpg.Connection, campaign_id: int, links: int) -> None:
    await campaigns.upsert_campaign(db, campaign_id, name="launch")
    slots = [LinkSlot(i, f"https://shop.example.com/{i}", f"L{i}", "html") for i in range(1, links + 1)]
    await campaigns.register_links(db, campaign_id, slots)
    for link in range(1, links + 1):
        await campaigns.set_actions(db, campaign_id, link, ACTION, "test")


async def click(http: aiohttp.ClientSession, url: str, headers: dict[str, str]) -> float:
    async with http.get(url, headers=headers, allow_redirects=False) as resp:
        assert resp.status == 302
    return time.time()


async def settled(db: asyncpg.Connection, campaign_id: int, count: int) -> list[asyncpg.Record]:
    async def done() -> list[asyncpg.Record]:
        pending = await db.fetchval("SELECT count(*) FROM pending_clicks WHERE campaign_id = $1", campaign_id)
        rows = await db.fetch("SELECT * FROM clicks WHERE campaign_id = $1 ORDER BY clicked_at", campaign_id)
        return rows if not pending and len(rows) == count else []

    return await eventually(done, timeout=20)


async def apart(since: float) -> bool:
    """True once more than the burst window has passed since ``since``: the next click is not in its burst."""
    return time.time() - since > BURST_WINDOW + 0.05


async def report(stack: Stack, db: asyncpg.Connection, campaign_id: int) -> dict[str, Any]:
    key = await apikeys.create(db, "truth", ["read"])
    async with (
        aiohttp.ClientSession() as http,
        http.get(
            f"http://127.0.0.1:{stack.collector.port}/v1/reports/campaigns/{campaign_id}",
            headers={"Authorization": f"Bearer {key}"},
        ) as resp,
    ):
        assert resp.status == 200
        body: dict[str, Any] = await resp.json()
        return body


async def test_a_scanner_burst_then_the_persons_click_fires_the_action_once_for_the_person(
    stack: Stack, db: asyncpg.Connection, campaign_id: int
) -> None:
    await register(db, campaign_id, 4)
    contact = campaign_id * 100 + 42
    now = int(time.time())

    def link(n: int, sent_at: int) -> str:
        token = stack.codec.mint(
            f"https://shop.example.com/{n}", campaign_id=campaign_id, link_id=n, contact_id=contact, sent_at=sent_at
        )
        return f"{stack.edge_url}/c/{token}"

    async with aiohttp.ClientSession() as http:
        # The gateway opens every link 40 s after the send...
        last = max([await click(http, link(n, now - 40), SCANNER) for n in range(1, 5)])
        await eventually(lambda: apart(last))
        # ...and the person, reading it hours later, clicks one (their token: the same link, sent then).
        await click(http, link(2, now - 3 * 3600), PERSON)
    rows = await settled(db, campaign_id, 5)
    scanner, person = rows[:4], rows[4]
    assert {r["verdict"] for r in scanner} == {"scanner"}
    assert all("burst" in r["verdict_reasons"] for r in scanner)
    assert person["verdict"] == "human" and person["link_id"] == 2
    applied = await db.fetch("SELECT link_id, event_id FROM applied_link_actions WHERE campaign_id = $1", campaign_id)
    assert [(r["link_id"], r["event_id"]) for r in applied] == [(2, person["event_id"])]
    assert await db.fetchval("SELECT count(*) FROM contact_tags WHERE contact_id = $1", contact) == 1
    got = await report(stack, db, campaign_id)
    assert (got["clicks"], got["unique_clicks"], got["unique_clickers"]) == (1, 1, 1)
    assert got["automated"] == {"scanner": 4, "preview": 0, "script": 0} and got["pending"] == 0
    async with aiohttp.ClientSession() as http:
        metrics = await (await http.get(f"http://127.0.0.1:{stack.collector.port}/metrics")).text()
    assert re.search(r'clickedge_collector_clicks_by_verdict_total\{verdict="scanner"\} [4-9]', metrics)
    assert "clickedge_collector_verdicts_pending " in metrics


async def test_a_contact_whose_only_clicks_were_a_scanners_gets_no_action_and_is_not_a_clicker(
    stack: Stack, db: asyncpg.Connection, campaign_id: int
) -> None:
    await register(db, campaign_id, 3)
    contact = campaign_id * 100 + 43
    sent_at = int(time.time()) - 30
    async with aiohttp.ClientSession() as http:
        for n in range(1, 4):
            token = stack.codec.mint(
                f"https://shop.example.com/{n}", campaign_id=campaign_id, link_id=n, contact_id=contact, sent_at=sent_at
            )
            await click(http, f"{stack.edge_url}/c/{token}", SCANNER)
    rows = await settled(db, campaign_id, 3)
    assert {r["verdict"] for r in rows} == {"scanner"}
    assert await db.fetchval("SELECT count(*) FROM applied_link_actions WHERE campaign_id = $1", campaign_id) == 0
    assert await db.fetchval("SELECT count(*) FROM contact_tags WHERE contact_id = $1", contact) == 0
    assert await db.fetchval("SELECT count(*) FROM campaign_clickers WHERE campaign_id = $1", campaign_id) == 0
    got = await report(stack, db, campaign_id)
    assert (got["unique_clickers"], got["automated"]["scanner"]) == (0, 3)


async def test_a_fetch_of_the_decoy_link_marks_the_scanners_next_click(
    stack: Stack, db: asyncpg.Connection, campaign_id: int
) -> None:
    await campaigns.upsert_campaign(db, campaign_id, name="decoyed", decoy_link=True)
    html = '<html><body><p><a href="https://shop.example.com/a">A</a> <a href="https://shop.example.com/b">B</a>'
    message = prepare(html)
    settings = await sending.register(db, campaign_id, message, campaign_id * 100 + 44)
    assert settings.decoy_link
    sent = sending.render(
        message,
        (html, None),
        stack.codec,
        tracking=True,
        base=stack.edge_url,
        campaign_id=campaign_id,
        contact=campaign_id * 100 + 44,
        sent_at=int(time.time()) - 3600,  # an hour after the send: no timing signal
        decoy=True,
    )
    hrefs = re.findall(r'href="([^"]+)"', sent.html)
    assert len(hrefs) == 3 and 'aria-hidden="true" tabindex="-1"' in sent.html
    decoy, first, _ = hrefs  # the decoy opens the body
    links = {
        r["link_id"]: r["decoy"] for r in await db.fetch("SELECT * FROM links WHERE campaign_id = $1", campaign_id)
    }
    assert links == {1: False, 2: False, 3: True}
    plain = {**PERSON, "X-Forwarded-For": "20.42.7.7"}  # a current browser, from a network no list names
    async with aiohttp.ClientSession() as http:
        fetched = await click(http, decoy, plain)
        await eventually(lambda: apart(fetched))
        await click(http, first, plain)
    rows = await settled(db, campaign_id, 2)
    assert [(r["link_id"], r["verdict"], r["verdict_reasons"][0]) for r in rows] == [
        (3, "scanner", "decoy"),
        (1, "scanner", "decoy_burst"),
    ]
    assert await db.fetchval("SELECT count(*) FROM applied_link_actions WHERE campaign_id = $1", campaign_id) == 0
    got = await report(stack, db, campaign_id)
    assert [link["id"] for link in got["links"]] == [1, 2]  # the decoy is no placement of the report
    assert orjson.dumps(got["automated"]) == orjson.dumps({"scanner": 2, "preview": 0, "script": 0})
