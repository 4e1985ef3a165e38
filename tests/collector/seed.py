"""A campaign with people's and machines' clicks over several hours, links with actions and hostile
names in every field a page shows: what the report pages' tests look at, written through the real ingest."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import asyncpg

from collector import campaigns, ingest
from common.events import Click
from links.rewrite import LinkSlot
from tests.collector.clock import HOUR_US, RECENT_US
from tests.collector.test_verdicts import click as browser_click

# Markup, script and attribute breakers in every field a page shows: each must appear as text and run nothing.
HOSTILE_NAME = "<script>alert('name')</script><img src=x onerror=alert(1)>"
HOSTILE_LINK = '"><svg onload=alert(2)>'
HOSTILE_URL = 'https://shop.example.com/?q="><script>alert(3)</script>'
HOSTILE_TAG = "</textarea><script>alert(4)</script>"


@dataclass(frozen=True)
class Seeded:
    campaign_id: int
    people: list[int]  # contacts whose clicks are people's
    hours: int


def click(campaign_id: int, contact: int | None, link: int, at_us: int, **kw: Any) -> Click:
    """A browser's click (tests/collector/test_verdicts.py), of ``contact`` (None: an anonymous link's)."""
    return browser_click(campaign_id, 0, link=link, at_us=at_us, contact_id=contact, **kw)


async def seed(db: asyncpg.Connection, campaign_id: int, *, name: str = HOSTILE_NAME, recipients: int = 40) -> Seeded:
    """Three placements (two of one URL), clicks over four hours: people on links 1 and 2, a script on link 1,
    a scanner's HEAD on link 3; a tag action with a hostile tag on link 1."""
    await campaigns.upsert_campaign(db, campaign_id, name=name, recipients=recipients)
    await campaigns.register_links(
        db,
        campaign_id,
        [
            LinkSlot(1, HOSTILE_URL, HOSTILE_LINK, "html"),
            LinkSlot(2, "https://shop.example.com/pricing", "Pricing", "html"),
            LinkSlot(3, "https://shop.example.com/pricing", "Pricing again", "html"),
        ],
    )
    await campaigns.set_actions(db, campaign_id, 1, [{"type": "add_tag", "tag": HOSTILE_TAG}], "test")
    people = [campaign_id * 10 + n for n in range(1, 6)]
    clicks = []
    for hour in range(4):
        at = RECENT_US + hour * HOUR_US
        for n, contact in enumerate(people[: hour + 2]):
            clicks.append(click(campaign_id, contact, 1 + n % 2, at + n * 1000))
        clicks.append(click(campaign_id, people[0], 1, at + 500_000, user_agent="curl/8.5.0", signals=0))
    clicks.append(click(campaign_id, people[1], 3, RECENT_US + HOUR_US, method="HEAD", signals=0))
    await ingest.prepare_connection(db)
    await ingest.ingest(db, "edge-a", clicks)
    return Seeded(campaign_id, people, 4)


LAUNCH = [  # (link id, name, destination) of a realistic newsletter, for the screenshot in the README
    (1, "Hero: shop the sale", "https://shop.example.com/black-friday"),
    (2, "Pricing", "https://shop.example.com/pricing"),
    (3, "Pricing (footer)", "https://shop.example.com/pricing"),
    (4, "Gift guide", "https://shop.example.com/gifts"),
    (5, "Read the blog", "https://blog.example.com/2026/holiday-plans"),
]


async def seed_launch(db: asyncpg.Connection, campaign_id: int) -> None:
    """A campaign over 48 hours: gateways fetch every link within minutes of the send, people click through the
    first evening and less the next day."""
    await campaigns.upsert_campaign(db, campaign_id, name="Black Friday 2026", recipients=2400)
    await campaigns.register_links(db, campaign_id, [LinkSlot(i, url, name, "html") for i, name, url in LAUNCH])
    await campaigns.set_actions(db, campaign_id, 1, [{"type": "add_tag", "tag": "bf-2026-clicked"}], "test")
    await campaigns.set_actions(db, campaign_id, 4, [{"type": "start_automation", "automation": "gift-nurture"}], "t")
    clicks = []
    people = [3, 5, 9, 14, 22, 31, 38, 41, 40, 34, 27, 21, 16, 12, 10, 8, 6, 5, 4, 3, 3, 2, 2, 1]
    for hour in range(48):
        at = RECENT_US - 24 * HOUR_US + hour * HOUR_US
        for n in range(people[hour % 24] // (1 + hour // 24)):
            contact = campaign_id * 10_000 + hour * 50 + n + 1
            clicks.append(click(campaign_id, contact, 1 + (n * 7 + hour) % 5, at + n * 20_000_000))
        if hour in (0, 1):  # the gateways' sweep right after the send
            for n in range(60 if hour == 0 else 15):
                contact = campaign_id * 10_000 + 5000 + n
                clicks.append(click(campaign_id, contact, 1 + n % 5, at + n * 1000, method="HEAD", signals=0))
        if hour % 6 == 3:
            clicks.append(click(campaign_id, None, 2, at, user_agent="curl/8.5.0", signals=0))
    await ingest.prepare_connection(db)
    await ingest.ingest(db, "edge-a", clicks)
