"""One-click unsubscribes on PostgreSQL: applied exactly once however often a batch comes, never undoing a
subscription made since, dropped for an erased contact; the planner alone; and the admin API's settings,
report, list and timeline."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import asyncpg
import orjson
import pytest
from aiohttp.test_utils import TestClient, TestServer

from collector import apikeys, campaigns, contacts, ingest, settle, unsubscribes
from collector.app import create_app
from collector.config import CollectorConfig
from common.events import UNSUBSCRIBE, Click
from tests.collector import derived
from tests.collector.clock import RECENT_US
from tests.collector.test_actions import LOOPBACK
from tests.collector.test_verdicts import click
from tests.conftest import INGEST_SECRET

SECOND = 1_000_000


def one_click(campaign_id: int, contact: int, *, at_us: int = RECENT_US) -> Click:
    return click(campaign_id, contact, link=0, at_us=at_us, method="POST", outcome=UNSUBSCRIBE, signals=0)


async def unsubscribe(db: asyncpg.Connection, *rows: Click, judge: settle.Judge = settle.SETTLE_AT_ONCE) -> int:
    result = await ingest.ingest(db, "e", [], judge=judge, unsubscribing=list(rows))
    assert result.unsubscribes == len(rows) and result.duplicates == 0
    return result.unsubscribes_applied


async def state(db: asyncpg.Connection, campaign_id: int, contact: int) -> dict[str, Any]:
    return {
        "member": await db.fetchval(
            "SELECT subscribed FROM list_memberships WHERE contact_id = $1 AND list = 'weekly'", contact
        ),
        "count": await db.fetchval("SELECT unsubscribes FROM campaign_stats WHERE campaign_id = $1", campaign_id),
        "rows": await db.fetchval("SELECT count(*) FROM unsubscribes WHERE campaign_id = $1", campaign_id),
        "timeline": await db.fetchval(
            "SELECT count(*) FROM contact_events WHERE contact_id = $1 AND campaign_id = $2", contact, campaign_id
        ),
        "webhooks": [
            orjson.loads(r["body"])
            for r in await db.fetch(
                "SELECT body FROM webhook_outbox WHERE (body->'campaign'->>'id')::bigint = $1 ORDER BY id", campaign_id
            )
        ],
    }


async def done_with(db: asyncpg.Connection, campaign_id: int) -> None:
    """Take a test's outbox rows out of every collector's way (tests share one database)."""
    await db.execute(
        "UPDATE webhook_outbox SET failed_at = now() WHERE (body->'campaign'->>'id')::bigint = $1", campaign_id
    )


async def test_an_unsubscribe_applies_once_however_often_its_batch_comes(
    db: asyncpg.Connection, campaign_id: int
) -> None:
    contact = campaign_id * 10 + 1
    hook = f"http://127.0.0.1:9/unsubscribed/{campaign_id}"  # never delivered: see done_with
    await campaigns.upsert_campaign(db, campaign_id, name="News", unsubscribe_list="weekly", unsubscribe_webhook=hook)
    await db.execute("INSERT INTO list_memberships VALUES ($1, 'weekly', true, now() - interval '30 days')", contact)
    post = one_click(campaign_id, contact)
    assert await unsubscribe(db, post) == 1
    after = await state(db, campaign_id, contact)
    assert (after["member"], after["count"], after["rows"], after["timeline"]) == (False, 1, 1, 1)
    [event] = after["webhooks"]
    assert event["type"] == "contact.unsubscribed" and event["contact_id"] == contact and event["list"] == "weekly"
    assert event["campaign"] == {"id": campaign_id, "name": "News"}
    assert event["event_id"] == str(uuid.UUID(bytes=post.event_id))

    before = await derived.snapshot(db, campaign_id, (contact,))
    assert await unsubscribe(db, post) == 0  # the same batch again
    assert await unsubscribe(db, post, post) == 0  # twice in one batch
    assert await derived.snapshot(db, campaign_id, (contact,)) == before
    # A second POST of the same contact (a double click on the button) is no second unsubscribe.
    assert await unsubscribe(db, one_click(campaign_id, contact, at_us=RECENT_US + SECOND)) == 0
    assert await derived.snapshot(db, campaign_id, (contact,)) == before
    await done_with(db, campaign_id)


async def test_two_posts_in_one_batch_are_one_unsubscribe(db: asyncpg.Connection, campaign_id: int) -> None:
    """The provider's POST and the person's own from the page, shipped together: one entry, one event."""
    contact = campaign_id * 10 + 1
    hook = f"http://127.0.0.1:9/unsubscribed/{campaign_id}"  # never delivered: see done_with
    await campaigns.upsert_campaign(db, campaign_id, unsubscribe_list="weekly", unsubscribe_webhook=hook)
    await db.execute("INSERT INTO list_memberships VALUES ($1, 'weekly', true, now() - interval '30 days')", contact)
    posts = [one_click(campaign_id, contact), one_click(campaign_id, contact, at_us=RECENT_US + SECOND)]
    assert await unsubscribe(db, *posts) == 1
    after = await state(db, campaign_id, contact)
    assert (after["member"], after["count"], after["rows"], after["timeline"]) == (False, 1, 1, 1)
    assert [e["event_id"] for e in after["webhooks"]] == [str(uuid.UUID(bytes=posts[0].event_id))]
    await done_with(db, campaign_id)


async def test_a_later_unsubscribe_takes_a_resubscribed_contact_off_again_and_a_replay_never_does(
    db: asyncpg.Connection, campaign_id: int
) -> None:
    contact = campaign_id * 10 + 1
    await campaigns.upsert_campaign(db, campaign_id, unsubscribe_list="weekly")
    first = one_click(campaign_id, contact)
    assert await unsubscribe(db, first) == 1
    resubscribed_at = datetime.fromtimestamp(RECENT_US / SECOND, UTC) + timedelta(seconds=10)
    await db.execute(
        "UPDATE list_memberships SET subscribed = true, changed_at = $2 WHERE contact_id = $1", contact, resubscribed_at
    )
    # The first POST's batch delivered again, after the contact subscribed again: it changes nothing.
    assert await unsubscribe(db, first) == 0
    assert (await state(db, campaign_id, contact))["member"] is True
    # A POST made after the new subscription takes them off again: on the timeline, not counted twice.
    assert await unsubscribe(db, one_click(campaign_id, contact, at_us=RECENT_US + 20 * SECOND)) == 1
    after = await state(db, campaign_id, contact)
    assert (after["member"], after["count"], after["rows"], after["timeline"]) == (False, 1, 1, 2)


async def test_a_campaign_without_a_list_still_records_and_counts(db: asyncpg.Connection, campaign_id: int) -> None:
    contact = campaign_id * 10 + 1
    assert await unsubscribe(db, one_click(campaign_id, contact)) == 1  # an unregistered campaign, too
    after = await state(db, campaign_id, contact)
    assert (after["member"], after["count"], after["rows"], after["webhooks"]) == (None, 1, 1, [])
    assert await db.fetchval("SELECT list FROM unsubscribes WHERE campaign_id = $1", campaign_id) is None


async def test_an_erased_contacts_unsubscribe_is_dropped(db: asyncpg.Connection, campaign_id: int) -> None:
    contact = campaign_id * 10 + 1
    key = contacts.tombstone_key(b"master")
    await campaigns.upsert_campaign(db, campaign_id, unsubscribe_list="weekly")
    assert await unsubscribe(db, one_click(campaign_id, contact)) == 1
    erased = await contacts.erase(db, key, contact, "test")
    assert erased.removed["unsubscribes"] == 1
    assert await db.fetchval("SELECT unsubscribes FROM campaign_stats WHERE campaign_id = $1", campaign_id) == 0
    judge = settle.Judge(erasure_key=key)
    assert await unsubscribe(db, one_click(campaign_id, contact, at_us=RECENT_US + SECOND), judge=judge) == 0
    after = await state(db, campaign_id, contact)
    assert (after["member"], after["count"], after["rows"], after["timeline"]) == (None, 0, 0, 0)


def test_the_plan_keeps_each_pairs_first_and_each_lists_latest() -> None:
    at = datetime(2026, 12, 1, tzinfo=UTC)
    a1 = unsubscribes.Unsubscribe(uuid.UUID(int=2), 7, 42, at)
    a2 = unsubscribes.Unsubscribe(uuid.UUID(int=1), 7, 42, at + timedelta(seconds=1))
    b = unsubscribes.Unsubscribe(uuid.UUID(int=3), 8, 42, at)
    lists = {7: unsubscribes.Campaign("A", "weekly", None), 8: unsubscribes.Campaign("B", "weekly", None)}
    plan = unsubscribes.plan([a2, b, a1], lists)
    assert plan.firsts == (a1, b)
    assert plan.lists == ((42, "weekly", at + timedelta(seconds=1)),)
    assert unsubscribes.plan([a1], {}).lists == ()  # a campaign unknown here names no list
    timeline, webhooks = unsubscribes.effects([a1], lists)
    assert orjson.loads(timeline[0].action) == {"type": "unsubscribe", "list": "weekly", "via": "one_click"}
    assert timeline[0].link_id == 0 and webhooks == []


@pytest.fixture
async def client(database_url: str, tmp_path: Path) -> AsyncIterator[TestClient[Any, Any]]:
    # Its deliverer may reach only loopback: the one webhook it is given goes to a closed port there.
    config = CollectorConfig(
        database_url=database_url,
        ingest_secret=INGEST_SECRET,
        data_dir=tmp_path,
        webhook_allow_networks=LOOPBACK,
    )
    async with TestClient(TestServer(create_app(config))) as client:
        yield client


async def test_the_api_sets_the_list_and_shows_unsubscribes_in_the_report_list_and_timeline(
    client: TestClient[Any, Any], db: asyncpg.Connection, campaign_id: int
) -> None:
    contact = campaign_id * 10 + 1
    write = {"Authorization": f"Bearer {await apikeys.create(db, 'unsub-write', ['write'])}"}
    path = f"/v1/campaigns/{campaign_id}"
    for body, error in (
        ({"unsubscribe_list": 5}, "unsubscribe_list must be a list name of at most 200 characters"),
        ({"unsubscribe_list": "x" * 201}, "unsubscribe_list must be a list name"),
        ({"unsubscribe_list": "a\x00b"}, "unsubscribe_list must be a list name"),
        ({"unsubscribe_list": "   "}, "unsubscribe_list must be a list name"),
        ({"unsubscribe_webhook": "ftp://crm.example.com/"}, "unsubscribe_webhook must be an absolute http(s) URL"),
        ({"unsubscribe_webhook": "http://10.1.2.3/"}, "unsubscribe_webhook is refused: "),
        ({"unsubscribe_webhook": 3}, "unsubscribe_webhook must be a non-empty string"),
    ):
        resp = await client.put(path, json=body, headers=write)
        assert resp.status == 400, body
        assert (await resp.json())["error"].startswith(error), body
    hook = f"http://127.0.0.1:9/unsubscribed/{campaign_id}"
    resp = await client.put(path, json={"unsubscribe_list": "weekly", "unsubscribe_webhook": hook}, headers=write)
    made = await resp.json()
    assert resp.status == 200 and made["unsubscribe_list"] == "weekly"
    assert made["new_webhook_endpoints"][0]["url"] == hook
    assert "secret" in made["new_webhook_endpoints"][0]

    batch = {
        "v": 1,
        "edge": "e",
        "clicks": [[uuid.uuid4().hex, RECENT_US, campaign_id, 0, contact, 1, 1, "", "ua", "POST", 0, UNSUBSCRIBE]],
    }
    resp = await client.post(
        "/v1/clicks", data=orjson.dumps(batch), headers={"Authorization": f"Bearer {INGEST_SECRET}"}
    )
    assert resp.status == 200 and (await resp.json())["unsubscribes"] == 1
    report = await (await client.get(f"/v1/reports/campaigns/{campaign_id}", headers=write)).json()
    assert report["unsubscribes"] == 1 and report["clicks"] == 0
    listed = await (await client.get(f"/v1/reports/campaigns/{campaign_id}/unsubscribes", headers=write)).json()
    assert [(u["contact_id"], u["list"]) for u in listed["unsubscribes"]] == [(contact, "weekly")]
    timeline = await (await client.get(f"/v1/reports/contacts/{contact}/timeline", headers=write)).json()
    [entry] = [e for e in timeline["events"] if e["campaign"]["id"] == campaign_id]
    assert entry["kind"] == "unsubscribe" and entry["link"] is None
    assert entry["action"] == {"type": "unsubscribe", "list": "weekly", "via": "one_click"}
    csv = await (await client.get(f"/v1/reports/contacts/{contact}/timeline?format=csv", headers=write)).text()
    assert ",unsubscribe," in csv and '""via"":""one_click""' in csv
    # "" clears the list again.
    cleared = await (await client.put(path, json={"unsubscribe_list": ""}, headers=write)).json()
    assert cleared["unsubscribe_list"] is None and cleared["unsubscribe_webhook"] == hook
    await done_with(db, campaign_id)
