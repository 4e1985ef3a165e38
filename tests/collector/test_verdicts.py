"""Verdicts on PostgreSQL: the hold, what counts and what fires, and the operators' settings (per campaign,
per link, allow-listed networks), through ingest, settling and the admin API."""

from __future__ import annotations

import asyncio
import ipaddress
import threading
import uuid
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import asyncpg
import pytest
from aiohttp.test_utils import TestClient, TestServer

from collector import apikeys, campaigns, ingest, reports, settle
from collector.actions import ActionError
from collector.app import create_app
from collector.config import CollectorConfig
from collector.networks import parse
from common import signals as sig
from common.events import Click, EventIds
from links.rewrite import LinkSlot, prepare
from tests.collector.clock import RECENT_US
from tests.conftest import INGEST_SECRET

NAVIGATION = sig.LAYOUT << sig.LAYOUT_SHIFT | sig.ACCEPT_HTML | sig.ACCEPT_LANGUAGE
CHROME = "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) Safari/537.36"
SCANNERS = parse("40.92.0.0/15 microsoft-eop\n")
ids = EventIds()


def click(campaign_id: int, contact: int, *, link: int = 1, at_us: int = RECENT_US, **kw: Any) -> Click:
    values: dict[str, Any] = {
        "event_id": ids.next_bytes(at_us // 1000),
        "clicked_at_us": at_us,
        "campaign_id": campaign_id,
        "link_id": link,
        "contact_id": contact,
        "sent_at": at_us // 1_000_000 - 86400,
        "key_id": 1,
        "client_ip": ipaddress.ip_address("100.70.1.2").packed,
        "user_agent": CHROME,
        "method": "GET",
        "signals": NAVIGATION,
    }
    values.update(kw)
    return Click(**values)


async def with_action(db: asyncpg.Connection, campaign_id: int, **settings: Any) -> None:
    await campaigns.upsert_campaign(db, campaign_id, name="c", **settings)
    await campaigns.register_links(db, campaign_id, [LinkSlot(1, "https://shop.example.com/", "L1", "html")])
    await campaigns.set_actions(db, campaign_id, 1, [{"type": "add_tag", "tag": "t"}], "test")


async def test_a_held_click_counts_and_acts_only_once_its_verdict_is_final(
    db: asyncpg.Connection, campaign_id: int
) -> None:
    await with_action(db, campaign_id)
    await ingest.prepare_connection(db)
    judge = settle.Judge(hold=30.0)
    result = await ingest.ingest(db, "e", [click(campaign_id, campaign_id * 1000 + 7)], judge=judge)
    assert (result.inserted, result.verdicts, result.first_clicks_with_actions) == (1, (), 0)
    report = await reports.campaign(db, campaign_id)
    assert (report["pending"], report["clicks"], report["unique_clickers"]) == (1, 0, 0)
    timeline = await reports.contact_timeline(db, campaign_id * 1000 + 7)
    assert [(e["kind"], e["verdict"], e["verdict_reasons"]) for e in timeline] == [("click", None, None)]
    assert not await db.fetchval("SELECT count(*) FROM applied_link_actions WHERE campaign_id = $1", campaign_id)
    await settle.settle(db, judge)  # (the suite's database is shared: other tests' clicks may be due)
    assert await db.fetchval("SELECT count(*) FROM clicks WHERE campaign_id = $1", campaign_id) == 0  # not due yet
    assert (await settle.pending_state(db))[0] >= 1

    done = await settle.settle(db, judge, until=datetime.now(UTC) + timedelta(seconds=31))
    assert done.verdicts.get("human", 0) >= 1 and len(done.applied) >= 1
    report = await reports.campaign(db, campaign_id)
    assert (report["pending"], report["clicks"], report["unique_clickers"]) == (0, 1, 1)
    timeline = await reports.contact_timeline(db, campaign_id * 1000 + 7)
    assert [e["kind"] for e in timeline] == ["click", "action"]
    assert (timeline[0]["verdict"], timeline[0]["verdict_reasons"]) == ("human", [])


async def test_a_campaign_that_counts_everything_counts_and_acts_on_machines_and_keeps_their_verdicts(
    db: asyncpg.Connection, campaign_id: int
) -> None:
    await with_action(db, campaign_id, count_everything=True)
    await ingest.prepare_connection(db)
    await ingest.ingest(db, "e", [click(campaign_id, campaign_id * 1000 + 8, method="HEAD")])
    row = await db.fetchrow("SELECT verdict, verdict_reasons FROM clicks WHERE campaign_id = $1", campaign_id)
    assert (row["verdict"], row["verdict_reasons"]) == ("scanner", ["head"])
    report = await reports.campaign(db, campaign_id)
    assert (report["clicks"], report["unique_clickers"], report["count_everything"]) == (1, 1, True)
    assert report["automated"] == {"scanner": 0, "preview": 0, "script": 0}
    assert await db.fetchval("SELECT count(*) FROM contact_tags WHERE contact_id = $1", campaign_id * 1000 + 8) == 1


async def test_a_link_whose_actions_fire_on_every_click_fires_for_a_machine(
    db: asyncpg.Connection, campaign_id: int
) -> None:
    await with_action(db, campaign_id)
    await campaigns.set_actions(db, campaign_id, 1, [{"type": "add_tag", "tag": "bot-hit"}], "test", on="every_click")
    await ingest.prepare_connection(db)
    result = await ingest.ingest(db, "e", [click(campaign_id, campaign_id * 1000 + 9, user_agent="curl/8.5.0")])
    assert result.verdicts == (("script", 1),) and result.first_clicks_with_actions == 1
    report = await reports.campaign(db, campaign_id)
    assert (report["clicks"], report["automated"]["script"]) == (0, 1)  # still a machine's in reports
    with pytest.raises(ActionError, match="on must be one of human, every_click"):
        await campaigns.set_actions(db, campaign_id, 1, [], "test", on="sometimes")


async def test_an_allow_listed_network_is_never_weighed_as_a_scanners(db: asyncpg.Connection, campaign_id: int) -> None:
    await with_action(db, campaign_id)
    await ingest.prepare_connection(db)
    office = ipaddress.ip_address("40.92.5.5").packed
    fast: dict[str, Any] = {"client_ip": office, "sent_at": RECENT_US // 1_000_000 - 30}
    listed = settle.Judge(scanners=lambda: SCANNERS)
    allowed = settle.Judge(scanners=lambda: SCANNERS, allowed=(ipaddress.ip_network("40.92.5.0/24"),))
    await ingest.ingest(db, "e", [click(campaign_id, campaign_id * 1000 + 10, **fast)], judge=listed)
    await ingest.ingest(db, "e", [click(campaign_id, campaign_id * 1000 + 11, **fast)], judge=allowed)
    rows = await db.fetch(
        "SELECT contact_id, verdict, verdict_reasons FROM clicks WHERE campaign_id = $1 ORDER BY 1", campaign_id
    )
    assert [tuple(r) for r in rows] == [
        (campaign_id * 1000 + 10, "scanner", ["fast", "scanner_network"]),
        (campaign_id * 1000 + 11, "human", ["fast", "allowed_network"]),
    ]


async def test_a_click_delivered_again_after_it_settled_changes_nothing(
    db: asyncpg.Connection, campaign_id: int
) -> None:
    await with_action(db, campaign_id)
    await ingest.prepare_connection(db)
    batch = [click(campaign_id, campaign_id * 1000 + 12)]
    first = await ingest.ingest(db, "e", batch)
    again = await ingest.ingest(db, "e", batch)
    assert (first.inserted, again.inserted, again.duplicates) == (1, 0, 1)
    assert await db.fetchval("SELECT count(*) FROM pending_clicks WHERE campaign_id = $1", campaign_id) == 0
    assert (await reports.campaign(db, campaign_id))["clicks"] == 1


def test_without_a_decoy_the_rendered_message_differs_only_in_the_rewritten_values() -> None:
    html = '<html>\n<body style="margin:0">\n<a href="https://shop.example.com/a?x=1&amp;y=2">A</a></body></html>'

    class Minter:
        def mint(self, destination: str, **kw: Any) -> str:
            return f"T{kw['link_id']}"

    message = prepare(html)
    plain, _ = message.render(Minter(), base_url="https://t.example", campaign_id=1, contact_id=2, sent_at=3)
    assert plain == html.replace("https://shop.example.com/a?x=1&amp;y=2", "https://t.example/c/T1")
    decoyed, _ = message.render(
        Minter(), base_url="https://t.example", campaign_id=1, contact_id=2, sent_at=3, decoy=True
    )
    hidden = '<a href="https://t.example/c/T2" style="display:none!important;mso-hide:all" aria-hidden="true" '
    assert decoyed == plain.replace(
        '<body style="margin:0">', '<body style="margin:0">' + hidden + 'tabindex="-1"></a>'
    )
    assert prepare("<p>no links</p>").decoy is None


@pytest.fixture
async def api(database_url: str, data_dir: Path) -> AsyncIterator[TestClient[Any, Any]]:
    config = CollectorConfig(verdict_hold=0, database_url=database_url, ingest_secret=INGEST_SECRET, data_dir=data_dir)
    async with TestClient(TestServer(create_app(config))) as client:
        yield client


async def test_the_api_sets_and_checks_the_settings(
    api: TestClient[Any, Any], db: asyncpg.Connection, campaign_id: int
) -> None:
    auth = {"Authorization": f"Bearer {await apikeys.create(db, 'w', ['write', 'read'])}"}
    path = f"/v1/campaigns/{campaign_id}"
    resp = await api.put(path, json={"count_everything": "yes"}, headers=auth)
    assert resp.status == 400 and "count_everything must be true or false" in (await resp.json())["error"]
    resp = await api.put(path, json={"decoy_link": True, "count_everything": True}, headers=auth)
    assert resp.status == 200
    got = await (await api.get(path, headers=auth)).json()
    assert (got["decoy_link"], got["count_everything"]) == (True, True)
    await campaigns.register_links(db, campaign_id, [LinkSlot(1, "https://shop.example.com/", "L1", "html")])
    actions = f"{path}/links/1/actions"
    resp = await api.put(actions + "?on=sometimes", json=[], headers=auth)
    assert resp.status == 400 and "on must be one of" in (await resp.json())["error"]
    resp = await api.put(actions + "?on=every_click", json=[{"type": "add_tag", "tag": "x"}], headers=auth)
    assert resp.status == 200 and (await resp.json())["on"] == "every_click"
    resp = await api.put(actions, json=[], headers=auth)  # no `on`: unchanged
    assert (await resp.json())["on"] == "every_click"
    links = await (await api.get(f"{path}/links", headers=auth)).json()
    assert (links["links"][0]["actions_on"], links["links"][0]["decoy"]) == ("every_click", False)


async def test_settling_is_shared_by_collectors_and_takes_each_click_once(
    db: asyncpg.Connection, database_url: str, campaign_id: int
) -> None:
    await with_action(db, campaign_id)
    await ingest.prepare_connection(db)
    judge = settle.Judge(hold=30.0)
    batch = [click(campaign_id, campaign_id * 1000 + 100 + n, at_us=RECENT_US + n) for n in range(300)]
    await ingest.ingest(db, "e", batch, judge=judge)
    later = datetime.now(UTC) + timedelta(seconds=31)

    async def drain(conn: asyncpg.Connection) -> int:
        taken = 0
        while claimed := (await settle.settle(conn, judge, until=later, limit=25)).claimed:
            taken += claimed
        return taken

    others = [await asyncpg.connect(database_url) for _ in range(2)]
    try:
        taken = await asyncio.gather(drain(db), *(drain(conn) for conn in others))  # three collectors at once
    finally:
        for conn in others:
            await conn.close()
    assert sum(taken) >= 300  # (the database is shared: other tests' due clicks are taken too)
    rows = await db.fetch("SELECT event_id FROM clicks WHERE campaign_id = $1", campaign_id)
    assert sorted(r["event_id"] for r in rows) == sorted(uuid.UUID(bytes=c.event_id) for c in batch)
    assert (await reports.campaign(db, campaign_id))["unique_clickers"] == 300


async def test_a_settling_pass_judges_off_the_event_loop(
    db: asyncpg.Connection, campaign_id: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Judging a pass is CPU work that grows with the contacts' clicks around it (seconds for a contact with
    thousands); on the event loop it held up every ingest request until they timed out."""
    await with_action(db, campaign_id)
    await ingest.prepare_connection(db)
    judge = settle.Judge(hold=30.0)
    await ingest.ingest(db, "e", [click(campaign_id, campaign_id * 1000 + 11)], judge=judge)
    loop_thread, threads = threading.get_ident(), []
    real = settle.decide

    def watched(*args: Any) -> Any:
        threads.append(threading.get_ident())
        return real(*args)

    monkeypatch.setattr(settle, "decide", watched)
    await settle.settle(db, judge, until=datetime.now(UTC) + timedelta(seconds=31))
    assert threads and loop_thread not in threads
