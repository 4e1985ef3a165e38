"""The report pages in Debian's Chromium, against a real collector and PostgreSQL: signing in with a one-time URL,
every page opened with no console error and no request outside the collector, the numbers and the chart's points
equal to the API's, hostile names shown as text and running nothing, the forms changing what they say, signing
out. A screenshot of each page goes under the run's output (tests/ui/conftest.py); the README's is one of them."""

from __future__ import annotations

import os
import shutil
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

import aiohttp
import asyncpg
import pytest
import pytest_asyncio
from aiohttp import web

from clickedge.pgembed import free_port
from collector import apikeys, sessions
from collector.app import create_app
from collector.config import CollectorConfig
from tests.browser import Page
from tests.collector.seed import HOSTILE_LINK, HOSTILE_NAME, HOSTILE_TAG, HOSTILE_URL, seed, seed_launch
from tests.conftest import INGEST_SECRET, new_campaign_id

pytestmark = pytest.mark.asyncio(loop_scope="module")
ROOT = Path(__file__).resolve().parents[2]
README_SCREENSHOT = ROOT / "docs" / "images" / "campaign-page.png"


@dataclass
class Site:
    base: str
    db: asyncpg.Connection
    key: str  # a read key, for the API's numbers
    hostile: int  # a campaign with hostile names everywhere
    people: list[int]
    launch: int  # a realistic one, for the README's screenshot

    async def api(self, path: str) -> Any:
        async with (
            aiohttp.ClientSession() as http,
            http.get(self.base + path, headers={"Authorization": f"Bearer {self.key}"}) as resp,
        ):
            assert resp.status == 200, await resp.text()
            return await resp.json()


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def site(database_url: str, tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[Site]:
    data_dir = tmp_path_factory.mktemp("ui")
    config = CollectorConfig(verdict_hold=0, database_url=database_url, ingest_secret=INGEST_SECRET, data_dir=data_dir)
    runner = web.AppRunner(create_app(config), access_log=None)
    await runner.setup()
    port = free_port()
    await web.TCPSite(runner, "127.0.0.1", port).start()
    db = await asyncpg.connect(database_url)
    try:
        hostile, launch = new_campaign_id(), new_campaign_id()
        seeded = await seed(db, hostile)
        await seed_launch(db, launch)
        key = await apikeys.create(db, "ui tests", ["read"])
        yield Site(f"http://127.0.0.1:{port}", db, key, hostile, seeded.people, launch)
    finally:
        await db.close()
        await runner.cleanup()


async def sign_in(page: Page, site: Site, scope: str = "write", landing: str | None = None) -> None:
    token, _ = await sessions.create_sign_in(site.db, [scope], landing)
    assert await page.goto(f"{site.base}/ui/login?token={token}") == 200
    assert await page.evaluate("location.pathname") == (landing or "/ui/")


def clean(page: Page, site: Site, *refused: str) -> None:
    """Nothing went wrong in the browser and nothing left the collector. ``refused``: paths the test was meant
    to be refused on (Chromium logs the 4xx of a document as a console error)."""
    expected = [f"(Bad Request) ({site.base}{p})" for p in refused] + [f"(Forbidden) ({site.base}{p})" for p in refused]
    errors = [
        e for e in page.console_errors if not (e.startswith("Failed to load resource") and e.endswith(tuple(expected)))
    ]
    assert errors == []
    assert page.dialogs == []
    outside = [url for url in page.requests if not url.startswith(site.base + "/") and not url.startswith("data:")]
    assert outside == []


async def fields(page: Page, within: str = "") -> dict[str, str]:
    got: dict[str, str] = await page.evaluate(
        "Object.fromEntries([...document.querySelectorAll("
        f"'{within} [data-field]')].map(e => [e.dataset.field, e.textContent.trim()]))"
    )
    return got


def num(n: int | None) -> str:
    return "\u2013" if n is None else f"{n:,}"


def pct(r: float | None) -> str:
    return "\u2013" if r is None else f"{r * 100:.1f} %"


async def test_a_one_time_url_signs_in_and_every_page_opens_cleanly(page: Page, site: Site, screenshots: Path) -> None:
    await sign_in(page, site)
    [cookie] = [c for c in await page.cookies() if c.name == sessions.COOKIE]
    assert cookie.http_only and cookie.same_site == "Strict"
    assert await page.evaluate("document.cookie") == ""  # HttpOnly: no script could read it
    pages = {
        "campaigns": "/ui/",
        "campaign": f"/ui/campaigns/{site.launch}",
        "link": f"/ui/campaigns/{site.launch}/links/1",
        "contact": f"/ui/contacts/{site.launch * 10_000 + 1}",
        "status": "/ui/status",
        "sessions": "/ui/sessions",
    }
    for name, path in pages.items():
        assert await page.goto(site.base + path) == 200, path
        assert await page.evaluate("document.querySelectorAll('script').length") == 0
        assert await page.evaluate("getComputedStyle(document.body).marginTop") == "0px"  # the stylesheet applied
        await page.screenshot(screenshots / f"{name}.png")
    clean(page, site)


async def test_the_campaign_page_shows_the_apis_numbers_and_chart(page: Page, site: Site, screenshots: Path) -> None:
    await sign_in(page, site, "read")
    report = await site.api(f"/v1/reports/campaigns/{site.launch}")
    assert await page.goto(f"{site.base}/ui/campaigns/{site.launch}") == 200
    headline = await fields(page, "dl.headline")
    assert headline == {
        "recipients": num(report["recipients"]),
        "unique_clickers": num(report["unique_clickers"]),
        "click_through_rate": pct(report["click_through_rate"]),
        "clicks": num(report["clicks"]),
        "unique_clicks": num(report["unique_clicks"]),
        "machine_clicks": num(sum(report["automated"].values())),
        "pending": num(report["pending"]),
        "unsubscribes": num(report["unsubscribes"]),
    }
    for link in report["links"]:
        shown = await fields(page, f'#links tr[data-link="{link["id"]}"]')
        assert shown["clicks"] == num(link["clicks"]) and shown["unique_clicks"] == num(link["unique_clicks"])
        assert shown["machine_clicks"] == num(sum(link["automated"].values()))
    # The chart: a point per hour for each series (people, machines), zero-filled, with the API's numbers.
    points = await page.evaluate(
        "[...document.querySelectorAll('svg.chart .series-people [data-at]')]"
        ".map(e => [e.dataset.at, +e.dataset.people, +e.dataset.machines])"
    )
    hourly = {datetime.fromisoformat(h["hour"]): (h["clicks"], sum(h["automated"].values())) for h in report["hourly"]}
    first, last = min(hourly), max(hourly)
    assert len(points) == (last - first).total_seconds() // 3600 + 1
    by_hour = {datetime.fromisoformat(at): (p, m) for at, p, m in points}
    assert {at: v for at, v in by_hour.items() if v != (0, 0)} == {at: v for at, v in hourly.items() if v != (0, 0)}
    machines = await page.evaluate("document.querySelectorAll('svg.chart .series-machines [data-at]').length")
    assert machines == len(points)
    table_rows = await page.evaluate("document.querySelectorAll('#chart-table tbody tr').length")
    assert table_rows == len(points)  # the same numbers for screen readers
    label = await page.evaluate("document.querySelector('svg.chart').getAttribute('aria-labelledby')")
    assert label and await page.evaluate(f"document.getElementById('{label.split()[0]}').textContent") != ""
    # The README's picture: the top of the page (numbers, chart, links), small.
    await page.screenshot(screenshots / "campaign-page.png", height=1180, scale=0.75)
    assert (screenshots / "campaign-page.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    if os.environ.get("CLICKEDGE_README_SCREENSHOT"):  # `CLICKEDGE_README_SCREENSHOT=1 make test ARGS=tests/ui`
        shutil.copyfile(screenshots / "campaign-page.png", README_SCREENSHOT)
    clean(page, site)

    listing = await site.api("/v1/reports/campaigns?sort=clicks&order=desc&limit=1000")
    mine = next(c for c in listing["campaigns"] if c["id"] == site.launch)
    assert await page.goto(f"{site.base}/ui/?sort=clicks&order=desc") == 200
    row = await fields(page, f'tr[data-campaign="{site.launch}"]')
    if row:  # on the first page unless 50 campaigns of other tests have more clicks
        assert row["clicks"] == num(mine["clicks"]) and row["unique_clickers"] == num(mine["unique_clickers"])
        assert row["click_through_rate"] == pct(mine["click_through_rate"])

    clickers = await site.api(f"/v1/reports/campaigns/{site.launch}/links/1/clickers?limit=100")
    assert await page.goto(f"{site.base}/ui/campaigns/{site.launch}/links/1") == 200
    shown = await page.evaluate(
        "[...document.querySelectorAll('#clickers tr[data-contact]')].map(e => +e.dataset.contact)"
    )
    assert shown == [c["contact_id"] for c in clickers["clickers"]]


async def test_hostile_names_show_as_text_and_run_nothing(page: Page, site: Site, screenshots: Path) -> None:
    await sign_in(page, site)
    for path in (
        f"/ui/campaigns/{site.hostile}",
        f"/ui/campaigns/{site.hostile}/links/1",
        f"/ui/contacts/{site.people[0]}",
        "/ui/?sort=id&order=desc",
    ):
        assert await page.goto(site.base + path) == 200
        assert await page.evaluate("document.querySelectorAll('script, img, svg [onload]').length") == 0
        await page.screenshot(screenshots / f"hostile-{path.split('/')[-1] or 'list'}.png")
        text = await page.text()
        if "/links/" in path:
            assert HOSTILE_LINK in text and HOSTILE_URL in text
            assert HOSTILE_TAG in await page.evaluate("document.querySelector('#actions-json').value")
        elif "/contacts/" in path:
            assert HOSTILE_LINK in text
        else:
            assert HOSTILE_NAME in text
    assert await page.goto(f"{site.base}/ui/campaigns/{site.hostile}") == 200
    assert await page.evaluate("document.querySelector('h1').firstChild.textContent.trim()") == HOSTILE_NAME
    clean(page, site)  # no alert() ran: a dialog would be recorded


async def test_a_write_session_blocks_and_lifts_and_sets_actions_through_the_forms(page: Page, site: Site) -> None:
    await sign_in(page, site, "write", f"/ui/campaigns/{site.launch}/links/5")
    async with page.expect_navigation():
        await page.fill("#block-reason", "phishing report #812")
        await page.click("form[action$='/block'] button")
    assert "Blocked: every edge answers 410" in await page.text()
    block = await site.db.fetchrow(
        "SELECT reason, blocked_by FROM blocks WHERE campaign_id = $1 AND link_id = 5 AND unblocked_at IS NULL",
        site.launch,
    )
    assert block["reason"] == "phishing report #812" and block["blocked_by"].startswith("ui:")
    async with page.expect_navigation():
        await page.click("form[action$='/unblock'] button")
    assert "Block lifted" in await page.text()

    async with page.expect_navigation():
        await page.fill("#actions-json", '[{"type": "add_tag", "tag": "read-the-blog"}]')
        await page.click("form[action$='/actions'] button")
    assert "Actions saved." in await page.text() and "add_tag: read-the-blog" in await page.text()
    async with page.expect_navigation():
        await page.fill("#actions-json", '[{"type": "webhook", "url": "http://127.0.0.1:9/hook"}]')
        await page.click("form[action$='/actions'] button")
    assert "Actions not saved" in await page.text()  # internal addresses are refused, as by the API
    actions = await site.db.fetchval("SELECT actions FROM links WHERE campaign_id = $1 AND link_id = 5", site.launch)
    assert "read-the-blog" in actions
    clean(page, site, f"/ui/campaigns/{site.launch}/links/5/actions")


async def test_a_read_session_sees_no_forms_and_signing_out_ends_it(page: Page, site: Site) -> None:
    await sign_in(page, site, "read", f"/ui/campaigns/{site.launch}")
    assert await page.evaluate("document.querySelectorAll('main form').length") == 0
    assert await page.goto(f"{site.base}/ui/sessions") == 403
    assert await page.goto(f"{site.base}/ui/") == 200
    async with page.expect_navigation():
        await page.click("form.signout button")
    assert await page.evaluate("location.pathname") == "/ui/login"
    assert await page.goto(f"{site.base}/ui/status") == 200
    assert await page.evaluate("location.pathname + location.search") == "/ui/login?next=/ui/status"
    clean(page, site, "/ui/sessions")
