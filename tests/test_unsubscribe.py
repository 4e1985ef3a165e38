"""One-click unsubscribe (RFC 8058), end to end: the headers a rewrite gives, the provider's POST to a real
edge, shipped through the spool to a real collector and applied in PostgreSQL exactly once, with its webhook
event delivered to a receiver on a real socket; a GET never unsubscribes; a token works only for its own
purpose."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import asyncpg
import orjson
import pytest
from aiohttp.test_utils import TestServer

from collector import apikeys, campaigns
from collector.config import existing_webhook_secret
from common import signing
from tests.collector.test_actions import LOOPBACK, Receiver
from tests.conftest import eventually
from tests.test_click_truth import PERSON, Stack, click, settled
from tests.test_privacy import link, running

ONE_CLICK = {"List-Unsubscribe": "One-Click"}


@pytest.fixture
async def stack(database_url: str, data_dir: Path) -> AsyncIterator[Stack]:
    async for s in running(database_url, data_dir, verdict_hold=0.0, webhook_allow_networks=LOOPBACK):
        yield s


async def rewritten(stack: Stack, db: asyncpg.Connection, campaign_id: int, contact: int) -> dict[str, Any]:
    key = await apikeys.create(db, "unsubscribe-e2e", ["write"])
    async with (
        aiohttp.ClientSession() as http,
        http.post(
            f"http://127.0.0.1:{stack.collector.port}/v1/campaigns/{campaign_id}/rewrite",
            json={"html": '<a href="https://shop.example.com/1">Shop</a>', "contact_id": contact},
            headers={"Authorization": f"Bearer {key}"},
        ) as resp,
    ):
        assert resp.status == 200, await resp.text()
        body: dict[str, Any] = await resp.json()
        return body


async def test_the_providers_post_unsubscribes_once_and_a_get_never_does(
    stack: Stack, db: asyncpg.Connection, campaign_id: int, data_dir: Path
) -> None:
    contact = campaign_id * 10 + 1
    receiver = Receiver(failures=0)
    hook = TestServer(receiver.app)
    await hook.start_server()
    try:
        hook_url = f"http://127.0.0.1:{hook.port}/hook"
        await campaigns.upsert_campaign(
            db, campaign_id, name="News", unsubscribe_list="weekly", unsubscribe_webhook=hook_url
        )
        await db.execute("INSERT INTO list_memberships VALUES ($1, 'weekly', true, now() - interval '1 day')", contact)
        message = await rewritten(stack, db, campaign_id, contact)
        assert message["headers"]["List-Unsubscribe-Post"] == "List-Unsubscribe=One-Click"
        url = message["headers"]["List-Unsubscribe"][1:-1]
        # The URL is on the public URL the collector mints for; this test's edge listens on its own port.
        url = stack.edge_url + url[url.index("/u/") :]
        async with aiohttp.ClientSession() as http:
            # A scanner, and a person looking at the page: GET and HEAD show it and change nothing.
            for method in ("GET", "HEAD", "GET"):
                async with http.request(method, url, headers=PERSON) as resp:
                    assert resp.status == 200
                    page = await resp.text()
                    assert method == "HEAD" or ('method="post"' in page and 'value="One-Click"' in page)
            # A click after them: once it is in PostgreSQL, so is everything the edge spooled before it.
            await click(http, link(stack, campaign_id, contact), PERSON)
            await settled(db, campaign_id, 1)
            assert await db.fetchval("SELECT count(*) FROM unsubscribes WHERE campaign_id = $1", campaign_id) == 0
            assert await db.fetchval(
                "SELECT subscribed FROM list_memberships WHERE contact_id = $1 AND list = 'weekly'", contact
            )
            # The provider's POST (urlencoded), then the person's own from the page (multipart): one unsubscribe.
            async with http.post(url, data=ONE_CLICK) as resp:
                assert resp.status == 200
            form = aiohttp.FormData(default_to_multipart=True)
            form.add_field("List-Unsubscribe", "One-Click")
            async with http.post(url, data=form) as resp:
                assert resp.status == 200

            # A click after them: once it is in PostgreSQL, so is everything the edge spooled before it.
            await click(http, link(stack, campaign_id, contact), PERSON)
        await settled(db, campaign_id, 2)
        member = await db.fetchval(
            "SELECT subscribed FROM list_memberships WHERE contact_id = $1 AND list = 'weekly'", contact
        )
        assert member is False
        assert await db.fetchval("SELECT unsubscribes FROM campaign_stats WHERE campaign_id = $1", campaign_id) == 1
        [entry] = await db.fetch(
            "SELECT action FROM contact_events WHERE contact_id = $1 AND campaign_id = $2", contact, campaign_id
        )
        assert orjson.loads(entry["action"]) == {"type": "unsubscribe", "list": "weekly", "via": "one_click"}
        assert await db.fetchval("SELECT count(*) FROM webhook_outbox WHERE url = $1", hook_url) == 1

        async def delivered() -> bool:
            return len(receiver.requests) >= 1

        await eventually(delivered, timeout=20)
        headers, raw = receiver.requests[0]
        event = orjson.loads(raw)
        assert event["type"] == "contact.unsubscribed" and event["contact_id"] == contact
        assert event["list"] == "weekly" and event["campaign"] == {"id": campaign_id, "name": "News"}
        endpoint = await db.fetchrow("SELECT id, generation FROM webhook_endpoints WHERE url = $1", hook_url)
        master = existing_webhook_secret("", data_dir)
        assert master is not None
        secret = signing.endpoint_secret(master, endpoint["id"], endpoint["generation"]).encode()
        assert signing.verify(secret, raw, headers[signing.SIGNATURE_HEADER])
    finally:
        await db.execute(
            "UPDATE webhook_outbox SET failed_at = now() WHERE url = $1 AND delivered_at IS NULL", hook_url
        )
        await hook.close()
    assert len(receiver.requests) == 1


async def test_a_token_works_only_for_its_own_purpose_at_the_edge(stack: Stack, campaign_id: int) -> None:
    contact = campaign_id * 10 + 1
    unsubscribe = stack.codec.mint_unsubscribe(campaign_id=campaign_id, contact_id=contact, sent_at=int(time.time()))
    click_url = link(stack, campaign_id, contact)
    async with aiohttp.ClientSession() as http:
        async with http.get(f"{stack.edge_url}/c/{unsubscribe}", allow_redirects=False) as resp:
            assert resp.status == 400 and "Location" not in resp.headers
        token = click_url.rsplit("/", 1)[1]
        for method in ("GET", "POST"):
            async with http.request(method, f"{stack.edge_url}/u/{token}", data=ONE_CLICK) as resp:
                assert resp.status == 404, method
                assert "not valid" in await resp.text()


async def test_a_post_without_the_one_click_pair_is_refused_and_says_why(stack: Stack, campaign_id: int) -> None:
    token = stack.codec.mint_unsubscribe(campaign_id=campaign_id, contact_id=1, sent_at=int(time.time()))
    async with (
        aiohttp.ClientSession() as http,
        http.post(f"{stack.edge_url}/u/{token}", data={"List-Unsubscribe": "yes"}) as resp,
    ):
        assert resp.status == 400
        assert "List-Unsubscribe=One-Click" in await resp.text()
