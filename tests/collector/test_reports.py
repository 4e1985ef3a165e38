"""Report numbers equal a brute-force recount from the raw click rows, on random data (property-based),
over real HTTP and a real PostgreSQL; and the clickers list pages and exports as CSV."""

from __future__ import annotations

import asyncio
import csv
import io
import itertools
from collections import Counter
from pathlib import Path
from typing import Any

import asyncpg
import orjson
from aiohttp.test_utils import TestClient, TestServer
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from collector import apikeys, campaigns
from collector.app import create_app
from collector.config import CollectorConfig
from common.events import EventIds
from links.rewrite import LinkSlot
from tests.collector import derived
from tests.collector.clock import RECENT_MS, RECENT_US
from tests.conftest import INGEST_SECRET

INGEST = {"Authorization": f"Bearer {INGEST_SECRET}"}
_campaigns = itertools.count(3_000_000_000)
HOUR_US = 3600 * 1_000_000

click = st.tuples(
    st.integers(0, 6),  # contact (0: anonymous)
    st.integers(1, 4),  # link placement
    st.integers(0, 5 * HOUR_US),  # when, within a few hours
)


async def recount(db: asyncpg.Connection, campaign_id: int) -> dict[str, Any]:
    """The report's numbers the slow way: straight from the click rows."""
    everything = await db.fetch(
        "SELECT contact_id, link_id, clicked_at, verdict FROM clicks WHERE campaign_id = $1", campaign_id
    )
    rows = [r for r in everything if r["verdict"] == "human"]  # reports count people
    named = [r for r in rows if r["contact_id"] != 0]
    per_link: dict[int, list[Any]] = {}
    for r in rows:
        per_link.setdefault(r["link_id"], []).append(r)
    hours = Counter(r["clicked_at"].replace(minute=0, second=0, microsecond=0).isoformat() for r in rows)
    return {
        "clicks": len(rows),
        "unique_clicks": len({(r["contact_id"], r["link_id"]) for r in named}),
        "unique_clickers": len({r["contact_id"] for r in named}),
        "links": {
            link: (len(rs), len({r["contact_id"] for r in rs if r["contact_id"] != 0})) for link, rs in per_link.items()
        },
        "hourly": dict(hours),
        "clickers": {(r["link_id"], r["contact_id"]): None for r in named},
        "automated": {v: sum(r["verdict"] == v for r in everything) for v in ("scanner", "preview", "script")},
    }


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    batches=st.lists(st.lists(click, min_size=1, max_size=30), min_size=1, max_size=4),
    redeliver=st.lists(st.integers(0, 3), max_size=3),
    recipients=st.integers(0, 10),
)
def test_reports_equal_a_recount_from_raw_rows(
    database_url: str, data_dir: Path, batches: list[list[tuple[int, int, int]]], redeliver: list[int], recipients: int
) -> None:
    asyncio.run(_check(database_url, data_dir, batches, redeliver, recipients))


async def _check(
    database_url: str, data_dir: Path, batches: list[list[tuple[int, int, int]]], redeliver: list[int], recipients: int
) -> None:
    campaign_id = next(_campaigns)
    config = CollectorConfig(verdict_hold=0, database_url=database_url, ingest_secret=INGEST_SECRET, data_dir=data_dir)
    db = await asyncpg.connect(database_url)
    try:
        await campaigns.upsert_campaign(db, campaign_id, name="Property", recipients=recipients)
        # Four placements, two of them the same URL.
        slots = [LinkSlot(i, f"https://x.example.com/{min(i, 3)}", f"L{i}", "html") for i in range(1, 5)]
        await campaigns.register_links(db, campaign_id, slots)
        key = await apikeys.create(db, "prop", ["read"])
        ids = EventIds()
        bodies = []
        for batch in batches:
            rows = [
                [
                    ids.next(RECENT_MS),
                    RECENT_US + at,
                    campaign_id,
                    link,
                    contact or None,
                    0,
                    1,
                    "192.0.2.1",
                    "ua",
                    "GET",
                ]
                for contact, link, at in batch
            ]
            bodies.append(orjson.dumps({"v": 1, "edge": "e", "clicks": rows}))
        async with TestClient(TestServer(create_app(config))) as api:
            for body in bodies:
                assert (await api.post("/v1/clicks", data=body, headers=INGEST)).status == 200
            before = await derived.snapshot(db, campaign_id)
            for i in redeliver:  # batches delivered again change nothing, in any table
                resp = await api.post("/v1/clicks", data=bodies[i % len(bodies)], headers=INGEST)
                assert resp.status == 200 and (await resp.json())["inserted"] == 0
            assert await derived.snapshot(db, campaign_id) == before
            assert await derived.recount(db, campaign_id) == {}
            resp = await api.get(f"/v1/reports/campaigns/{campaign_id}", headers={"Authorization": f"Bearer {key}"})
            assert resp.status == 200
            report = await resp.json()
            truth = await recount(db, campaign_id)
            assert report["clicks"] == truth["clicks"]
            assert report["unique_clicks"] == truth["unique_clicks"]
            assert report["unique_clickers"] == truth["unique_clickers"]
            assert report["automated"] == truth["automated"] and report["pending"] == 0
            assert report["recipients"] == recipients
            expected_ctr = round(truth["unique_clickers"] / recipients, 6) if recipients else None
            assert report["click_through_rate"] == expected_ctr
            got_links = {link["id"]: (link["clicks"], link["unique_clicks"]) for link in report["links"]}
            assert {k: v for k, v in got_links.items() if v != (0, 0)} == truth["links"]
            by_url = {u["destination"]: (u["clicks"], u["unique_clicks"], u["placements"]) for u in report["urls"]}
            same = truth["links"].get(3, (0, 0)), truth["links"].get(4, (0, 0))
            assert by_url["https://x.example.com/3"] == (same[0][0] + same[1][0], same[0][1] + same[1][1], [3, 4])
            # An hour of machines' clicks only is in the series with no people's clicks.
            assert {h["hour"]: h["clicks"] for h in report["hourly"] if h["clicks"]} == truth["hourly"]
            for link in range(1, 5):
                listed = await api.get(
                    f"/v1/reports/campaigns/{campaign_id}/links/{link}/clickers?limit=2",
                    headers={"Authorization": f"Bearer {key}"},
                )
                page = await listed.json()
                want = sorted(c for lk, c in truth["clickers"] if lk == link)
                assert [c["contact_id"] for c in page["clickers"]] == want[:2]
    finally:
        await db.close()


async def test_clickers_page_and_export_as_csv(database_url: str, data_dir: Path, db: asyncpg.Connection) -> None:
    campaign_id = next(_campaigns)
    config = CollectorConfig(verdict_hold=0, database_url=database_url, ingest_secret=INGEST_SECRET, data_dir=data_dir)
    key = await apikeys.create(db, "csv", ["read"])
    headers = {"Authorization": f"Bearer {key}"}
    ids = EventIds()
    rows = [
        [ids.next(RECENT_MS), RECENT_US + n, campaign_id, 1, contact, 0, 1, "192.0.2.1", "u", "GET"]
        for n, contact in enumerate([*range(1, 2501), 7, 7])
    ]
    async with TestClient(TestServer(create_app(config))) as api:
        resp = await api.post("/v1/clicks", data=orjson.dumps({"v": 1, "edge": "e", "clicks": rows}), headers=INGEST)
        assert resp.status == 200
        seen: list[int] = []
        after = 0
        while True:
            page = await (
                await api.get(
                    f"/v1/reports/campaigns/{campaign_id}/links/1/clickers?limit=1000&after={after}", headers=headers
                )
            ).json()
            seen += [c["contact_id"] for c in page["clickers"]]
            if page["next_after"] is None:
                break
            after = page["next_after"]
        assert seen == list(range(1, 2501))
        resp = await api.get(f"/v1/reports/campaigns/{campaign_id}/links/1/clickers?format=csv", headers=headers)
        assert resp.content_type == "text/csv"
        table = list(csv.DictReader(io.StringIO(await resp.text())))
        assert len(table) == 2500
        assert table[6]["contact_id"] == "7" and table[6]["clicks"] == "3"
        assert {row["verdict"] for row in table} == {"human"}
