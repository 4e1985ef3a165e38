"""Privacy by default, end to end: links clicked on a real edge, shipped to a real collector, settled into a
real PostgreSQL. A click keeps its client's network, not its address, unless its campaign (or the
deployment) keeps full addresses; an anonymous campaign's clicks are counted without their contact, and fire
no action."""

from __future__ import annotations

import ipaddress
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import asyncpg
import pytest
from aiohttp.test_utils import TestServer

from collector import campaigns
from collector.app import create_app
from collector.config import CollectorConfig
from collector.networks import stored
from collector.stored_agents import reduced
from edge.config import EdgeConfig
from edge.main import shutdown, start
from links import keys
from tests.conftest import INGEST_SECRET
from tests.test_click_truth import PERSON, Stack, click, register, settled


async def running(database_url: str, data_dir: Path, **settings: Any) -> AsyncIterator[Stack]:
    config = CollectorConfig(database_url=database_url, ingest_secret=INGEST_SECRET, data_dir=data_dir, **settings)
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


@pytest.fixture
async def stack(database_url: str, data_dir: Path) -> AsyncIterator[Stack]:
    """The collector as deployed by default (a verdict hold of 1 s, for the test's sake)."""
    async for s in running(database_url, data_dir, verdict_hold=1.0):
        yield s


@pytest.fixture
async def full_stack(database_url: str, data_dir: Path) -> AsyncIterator[Stack]:
    """A deployment that keeps full addresses (CLICKEDGE_COLLECTOR_CLIENT_IPS=full) and reduced agents
    (CLICKEDGE_COLLECTOR_USER_AGENTS=reduced), judging each batch at once."""
    async for s in running(database_url, data_dir, verdict_hold=0.0, client_ips="full", user_agents="reduced"):
        yield s


@pytest.fixture
async def reduced_stack(database_url: str, data_dir: Path) -> AsyncIterator[Stack]:
    """Reduced agents, with clicks waiting for their verdicts."""
    async for s in running(database_url, data_dir, verdict_hold=1.0, user_agents="reduced"):
        yield s


def link(stack: Stack, campaign_id: int, contact: int, link_id: int = 1) -> str:
    token = stack.codec.mint(
        f"https://shop.example.com/{link_id}",
        campaign_id=campaign_id,
        link_id=link_id,
        contact_id=contact,
        sent_at=int(time.time()) - 3 * 3600,
    )
    return f"{stack.edge_url}/c/{token}"


def address(text: str) -> dict[str, str]:
    return {**PERSON, "X-Forwarded-For": text}


async def test_clicks_keep_their_network_unless_the_campaign_keeps_full_addresses(
    stack: Stack, db: asyncpg.Connection, campaign_id: int
) -> None:
    full_campaign = campaign_id + 500_000
    await register(db, campaign_id, 1)
    await register(db, full_campaign, 1)
    await campaigns.upsert_campaign(db, full_campaign, full_client_ips=True)
    async with aiohttp.ClientSession() as http:
        await click(http, link(stack, campaign_id, 11), address("100.70.1.2"))
        await click(http, link(stack, campaign_id, 12), address("2001:db8:1:2::5"))
        await click(http, link(stack, full_campaign, 13), address("100.70.1.2"))
    rows = await settled(db, campaign_id, 2)
    assert {r["contact_id"]: str(r["client_ip"]) for r in rows} == {11: "100.70.1.0/24", 12: "2001:db8:1::/48"}
    [full] = await settled(db, full_campaign, 1)
    assert str(full["client_ip"]) == "100.70.1.2"
    # Truncated, a person's click is still judged a person's, and counted as one.
    assert {r["verdict"] for r in rows} == {"human"}


async def test_a_deployment_may_keep_full_addresses_and_reduced_agents(
    full_stack: Stack, db: asyncpg.Connection, campaign_id: int
) -> None:
    await register(db, campaign_id, 1)
    async with aiohttp.ClientSession() as http:
        await click(http, link(full_stack, campaign_id, 21), address("100.70.1.2"))
    [row] = await settled(db, campaign_id, 1)
    assert str(row["client_ip"]) == "100.70.1.2"
    assert row["user_agent"] == "Chrome; Mac OS X"


async def test_reduced_agents_are_stored_after_the_whole_agent_was_judged(
    reduced_stack: Stack, db: asyncpg.Connection, campaign_id: int
) -> None:
    await register(db, campaign_id, 2)
    async with aiohttp.ClientSession() as http:
        await click(http, link(reduced_stack, campaign_id, 41), address("100.70.1.2"))
        await click(http, link(reduced_stack, campaign_id, 42, link_id=2), {"User-Agent": "python-requests/2.32"})
    rows = await settled(db, campaign_id, 2)
    stored = {r["contact_id"]: (r["user_agent"], r["verdict"], list(r["verdict_reasons"])) for r in rows}
    assert stored[41][:2] == ("Chrome; Mac OS X", "human")
    # The script is known by its whole agent, which no row keeps.
    assert stored[42][0] == "Python Requests; Other" and stored[42][1] == "script" and "script_agent" in stored[42][2]


async def test_an_anonymous_campaigns_clicks_are_counted_without_their_contact_and_fire_nothing(
    stack: Stack, db: asyncpg.Connection, campaign_id: int
) -> None:
    await register(db, campaign_id, 1)  # its link tags whoever clicks first
    await campaigns.upsert_campaign(db, campaign_id, anonymous=True)
    async with aiohttp.ClientSession() as http:
        await click(http, link(stack, campaign_id, 31), address("100.70.1.2"))
        await click(http, link(stack, campaign_id, 32), address("100.70.9.9"))
    rows = await settled(db, campaign_id, 2)
    assert [r["contact_id"] for r in rows] == [0, 0]
    assert await db.fetchval("SELECT count(*) FROM contact_tags WHERE contact_id IN (31, 32)") == 0
    assert await db.fetchval("SELECT count(*) FROM link_clickers WHERE campaign_id = $1", campaign_id) == 0
    stats = await db.fetchrow("SELECT clicks, unique_clickers FROM campaign_stats WHERE campaign_id = $1", campaign_id)
    assert tuple(stats) == (2, 0)


def test_an_agent_is_reduced_to_its_browser_and_os_families() -> None:
    assert reduced(PERSON["User-Agent"]) == "Chrome; Mac OS X"
    assert reduced("curl/8.5.0") == "curl; Other"
    assert reduced("") == "" and reduced("  ") == ""


def test_a_stored_address_is_its_network_as_the_settling_statement_writes_it() -> None:
    v4, v6 = ipaddress.ip_address("192.0.2.77"), ipaddress.ip_address("2001:db8:aa:bb::1")
    assert str(stored(v4.packed, False)) == "192.0.2.0/24"
    assert str(stored(v6.packed, False)) == "2001:db8:aa::/48"
    assert str(stored(v4.packed, True)) == "192.0.2.77/32"
