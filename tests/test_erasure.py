"""Erasure and export, end to end: a contact clicks through a real edge and a real collector, is exported and
erased through the admin API, and stays erased when their spooled clicks are delivered again and when their
old link is clicked again: those clicks are counted as anonymous ones. The counters equal a recount of the
click rows throughout."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from datetime import datetime
from pathlib import Path
from typing import Any

import aiohttp
import asyncpg
import orjson
import pytest

from collector import apikeys, contacts
from collector.config import existing_webhook_secret
from tests.clickedge.test_cli import clickedge
from tests.collector.derived import recount
from tests.conftest import INGEST_SECRET
from tests.test_click_truth import PERSON, Stack, click, register, settled
from tests.test_privacy import link, running


@pytest.fixture
async def stack(database_url: str, data_dir: Path) -> AsyncIterator[Stack]:
    async for s in running(database_url, data_dir, verdict_hold=0.5):
        yield s


async def api(stack: Stack, db: asyncpg.Connection, method: str, path: str, scope: str) -> tuple[int, Any]:
    key = await apikeys.create(db, f"erasure-{scope}", [scope])
    async with (
        aiohttp.ClientSession() as http,
        http.request(
            method, f"http://127.0.0.1:{stack.collector.port}{path}", headers={"Authorization": f"Bearer {key}"}
        ) as resp,
    ):
        return resp.status, await resp.json()


async def test_an_erased_contact_stays_erased_when_their_clicks_come_again(
    stack: Stack, db: asyncpg.Connection, campaign_id: int, data_dir: Path
) -> None:
    erased, kept = campaign_id * 10 + 1, campaign_id * 10 + 2
    await register(db, campaign_id, 1)  # the link tags whoever clicks it first
    await db.execute(
        "INSERT INTO campaign_recipients (campaign_id, contact_id) VALUES ($1, $2), ($1, $3)", campaign_id, erased, kept
    )
    await db.execute("UPDATE campaigns SET recipients = 2 WHERE campaign_id = $1", campaign_id)
    async with aiohttp.ClientSession() as http:
        await click(http, link(stack, campaign_id, erased), PERSON)
        await settled(db, campaign_id, 1)
        await click(http, link(stack, campaign_id, kept), PERSON)
    await settled(db, campaign_id, 2)

    status, before = await api(stack, db, "GET", f"/v1/contacts/{erased}/export", "read")
    assert status == 200 and before["erased"] is False
    [row] = before["clicks"]
    assert row["verdict"] == "human" and row["contact_id"] == erased
    assert [t["tag"] for t in before["contact_tags"]] == ["wants-pricing"]
    assert len(before["contact_events"]) == 1 and len(before["link_clickers"]) == 1
    assert before["campaign_recipients"][0]["campaign_id"] == campaign_id

    assert (await api(stack, db, "DELETE", f"/v1/contacts/{erased}", "read"))[0] == 403  # read may not erase
    status, done = await api(stack, db, "DELETE", f"/v1/contacts/{erased}", "write")
    assert status == 200 and done["erased"] is True
    assert done["removed"]["clicks"] == 1 and done["removed"]["contact_tags"] == 1
    assert done["removed"]["campaign_recipients"] == 1
    status, after = await api(stack, db, "GET", f"/v1/contacts/{erased}/export", "read")
    assert after["erased"] is True
    assert all(after[table] == [] for table in after if table not in ("contact_id", "erased"))
    stats = await db.fetchrow(
        "SELECT clicks, unique_clicks, unique_clickers FROM campaign_stats WHERE campaign_id = $1", campaign_id
    )
    assert tuple(stats) == (1, 1, 1)  # as if only the other contact had clicked
    assert await db.fetchval("SELECT recipients FROM campaigns WHERE campaign_id = $1", campaign_id) == 1
    assert await recount(db, campaign_id) == {}
    # Audited, with the tombstone and who, never the id.
    audit = await db.fetchrow("SELECT tombstone, actor, removed FROM contact_erasures ORDER BY id DESC LIMIT 1")
    master = existing_webhook_secret("", data_dir)
    assert master is not None
    assert bytes(audit["tombstone"]) == contacts.tombstone(contacts.tombstone_key(master), erased)
    assert audit["actor"].startswith("api:") and orjson.loads(audit["removed"])["clicks"] == 1
    assert str(erased) not in audit["actor"] + audit["removed"]

    # The edge's spool delivered again: the same click, as the edge first sent it.
    replay = {
        "v": 1,
        "edge": "replayed",
        "clicks": [
            [
                uuid.UUID(row["event_id"]).hex,
                _us(row["clicked_at"]),
                campaign_id,
                1,
                erased,
                _seconds(row["sent_at"]),
                row["key_id"],
                "100.70.1.2",
                PERSON["User-Agent"],
                "GET",
            ]
        ],
    }
    async with (
        aiohttp.ClientSession() as http,
        http.post(
            f"http://127.0.0.1:{stack.collector.port}/v1/clicks",
            data=orjson.dumps(replay),
            headers={"Authorization": f"Bearer {INGEST_SECRET}"},
        ) as resp,
    ):
        assert resp.status == 200
        # And the old link clicked again, through the edge.
        await click(http, link(stack, campaign_id, erased), PERSON)
    rows = await settled(db, campaign_id, 3)
    assert sorted(r["contact_id"] for r in rows) == [0, 0, kept]  # counted, as anonymous clicks
    status, again = await api(stack, db, "GET", f"/v1/contacts/{erased}/export", "read")
    assert all(again[table] == [] for table in again if table not in ("contact_id", "erased"))
    assert await db.fetchval("SELECT count(*) FROM contact_tags WHERE contact_id = $1", erased) == 0
    assert await recount(db, campaign_id) == {}


async def test_the_command_line_exports_and_erases(
    stack: Stack, db: asyncpg.Connection, campaign_id: int, data_dir: Path, database_url: str
) -> None:
    contact = campaign_id * 10 + 3
    await register(db, campaign_id, 1)
    async with aiohttp.ClientSession() as http:
        await click(http, link(stack, campaign_id, contact), PERSON)
    await settled(db, campaign_id, 1)
    common = ("--data-dir", str(data_dir), "--database-url", database_url)
    exported = clickedge("contacts", "export", str(contact), *common)
    assert exported.returncode == 0, exported.stderr
    assert len(orjson.loads(exported.stdout)["clicks"]) == 1
    erased = clickedge("contacts", "erase", str(contact), *common)
    assert erased.returncode == 0, erased.stderr
    assert orjson.loads(erased.stdout)["removed"]["clicks"] == 1
    assert await db.fetchval("SELECT count(*) FROM clicks WHERE contact_id = $1", contact) == 0
    actor = await db.fetchval("SELECT actor FROM contact_erasures ORDER BY id DESC LIMIT 1")
    assert actor.startswith("cli:")

    elsewhere = data_dir / "no-such-dir"  # no master secret there
    missing = clickedge("contacts", "erase", str(contact), "--data-dir", str(elsewhere), "--database-url", database_url)
    assert missing.returncode == 2 and "master secret is not here" in missing.stderr
    for bad in ("0", "x1", "99999999999999999999"):
        assert clickedge("contacts", "erase", bad, *common).returncode == 2


def test_a_tombstone_is_a_keyed_hash_never_the_id() -> None:
    key = contacts.tombstone_key(b"master")
    stone = contacts.tombstone(key, 42)
    assert len(stone) == 32 and stone == contacts.tombstone(key, 42)
    assert stone != contacts.tombstone(key, 43) and stone != contacts.tombstone(contacts.tombstone_key(b"other"), 42)
    assert (42).to_bytes(8, "big") not in stone


def _us(at: str) -> int:
    return int(datetime.fromisoformat(at).timestamp() * 1_000_000)


def _seconds(at: str) -> int:
    return int(datetime.fromisoformat(at).timestamp())
