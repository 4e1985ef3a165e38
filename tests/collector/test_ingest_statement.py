"""The ingest statement (collector/ingest.py's MOVE_STAGED) called directly on a real PostgreSQL connection:
what it derives from a contact's clicks when batches arrive out of order, when one batch holds several
clicks of one contact, and whatever the session's time zone. (test_ingest.py drives it through the
collector's HTTP API; test_reports.py compares its counters with a recount on random batches.)"""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta

import asyncpg

from collector import campaigns
from collector.ingest import IngestResult, ingest, prepare_connection
from common.events import Click, EventIds
from links.rewrite import LinkSlot
from tests.collector.clock import RECENT_MS, RECENT_S, RECENT_US

RECENT = datetime.fromtimestamp(RECENT_S, UTC)  # on the hour
_ids = EventIds()


def click(campaign_id: int, link_id: int, contact_id: int | None, minute: float) -> Click:
    return Click(
        _ids.next_bytes(RECENT_MS),
        RECENT_US + int(minute * 60_000_000),
        campaign_id,
        link_id,
        contact_id,
        RECENT_S - 10_000,
        1,
        None,
        "ua",
        "GET",
        None,
    )


def at(minute: float) -> datetime:
    return RECENT + timedelta(minutes=minute)


async def write(db: asyncpg.Connection, *clicks: Click) -> IngestResult:
    await prepare_connection(db)
    return await ingest(db, "test-edge", list(clicks))


async def test_a_clicker_keeps_the_first_and_the_last_click_whatever_order_batches_arrive_in(
    db: asyncpg.Connection, campaign_id: int
) -> None:
    # An edge that was cut off delivers its older clicks after newer ones from another edge.
    for minutes in ([10, 20], [5], [30], [15]):
        await write(db, *(click(campaign_id, 1, 7, m) for m in minutes))
    clicker = await db.fetchrow(
        "SELECT first_click, last_click, clicks FROM link_clickers WHERE campaign_id = $1 AND link_id = 1"
        " AND contact_id = 7",
        campaign_id,
    )
    assert tuple(clicker) == (at(5), at(30), 5)
    link = await db.fetchrow(
        "SELECT clicks, last_click, unique_clicks FROM link_click_counts WHERE campaign_id = $1 AND link_id = 1",
        campaign_id,
    )
    assert tuple(link) == (5, at(30), 1)


async def test_a_contacts_first_click_in_a_campaign_is_their_earliest_on_any_link(
    db: asyncpg.Connection, campaign_id: int
) -> None:
    await write(db, click(campaign_id, 1, 8, 10), click(campaign_id, 2, 8, 5))
    first = await db.fetchval(
        "SELECT first_click FROM campaign_clickers WHERE campaign_id = $1 AND contact_id = 8", campaign_id
    )
    assert first == at(5)


async def test_hours_are_utc_hours_whatever_the_sessions_time_zone(db: asyncpg.Connection, campaign_id: int) -> None:
    await db.execute("SET TIME ZONE 'Asia/Kolkata'")  # UTC+05:30: its hours start at half past UTC's
    await write(db, click(campaign_id, 1, 9, 15), click(campaign_id, 1, 9, 45), click(campaign_id, 1, None, 75))
    hours = await db.fetch("SELECT hour, clicks FROM campaign_hourly WHERE campaign_id = $1 ORDER BY hour", campaign_id)
    assert [tuple(h) for h in hours] == [(at(0), 2), (at(60), 1)]


async def test_actions_apply_for_the_first_click_of_a_batch_on_a_link_that_has_them(
    db: asyncpg.Connection, campaign_id: int
) -> None:
    await campaigns.upsert_campaign(db, campaign_id, name="Statement")
    slots = [LinkSlot(n, f"https://shop.example.com/{n}", f"L{n}", "html") for n in (1, 2)]
    await campaigns.register_links(db, campaign_id, slots)
    await campaigns.set_actions(db, campaign_id, 1, [{"type": "add_tag", "tag": "clicked"}], "test")
    contact = campaign_id * 10
    # One batch, in no particular order: two clicks on link 1 (the earlier one applies its actions), and
    # one on link 2, which has no actions of its own.
    late, early, other = (
        click(campaign_id, 1, contact, 30),
        click(campaign_id, 1, contact, 10),
        click(campaign_id, 2, contact, 5),
    )
    result = await write(db, late, early, other)
    assert result.first_clicks_with_actions == 1
    applied = await db.fetch(
        "SELECT link_id, event_id FROM applied_link_actions WHERE campaign_id = $1 AND contact_id = $2",
        campaign_id,
        contact,
    )
    assert [tuple(a) for a in applied] == [(1, uuid.UUID(bytes=early.event_id))]
    assert [r["tag"] for r in await db.fetch("SELECT tag FROM contact_tags WHERE contact_id = $1", contact)] == [
        "clicked"
    ]
