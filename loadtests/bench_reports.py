"""Report latency on a campaign with 10 million clicks, through the collector's report API.

Starts its own embedded PostgreSQL, loads the clicks in bulk with SQL (random contacts, 20 placements,
spread over 30 days) and builds the report tables from them the way ingest keeps them, then pushes one
more batch through the real ingest path so the incremental path is on top. It then times the campaign
report, a page of "who clicked" and a contact timeline over real HTTP, and the report pages a browser gets
(the campaign page, with its chart, and the campaign list), signed in with a session cookie; and checks the
campaign report against a recount from the raw rows (which is the slow way, timed too, for contrast).

    .venv/bin/python -m loadtests.bench_reports [--clicks 10000000] [--json out.json]
"""

from __future__ import annotations

import argparse
import asyncio
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import aiohttp
import asyncpg
import orjson
from aiohttp import web

from clickedge.pgembed import EmbeddedPostgres, free_port
from collector import apikeys, campaigns
from collector.app import create_app
from collector.config import CollectorConfig
from collector.schema import migrate_dsn
from common.events import EventIds
from links.rewrite import LinkSlot
from loadtests.report import as_json, write_json

CAMPAIGN = 4_000_000_001
LINKS = 20
SECRET = "bench-ingest-secret-0123456789"  # noqa: S105 - a throwaway database's

LOAD = """
INSERT INTO clicks (contact_id, clicked_at, event_id, campaign_id, link_id, sent_at, key_id, client_ip, user_agent,
                    method, edge, verdict, verdict_reasons)
SELECT 1 + (random() * ($2 - 1))::bigint,
       now() - interval '30 days' + random() * interval '30 days',
       gen_random_uuid(), $1, 1 + (random() * ($3 - 1))::int, now() - interval '31 days', 1,
       '192.0.2.1', 'Mozilla/5.0 (bench)', 'GET', 'bench', 'human', '{}'
FROM generate_series(1, $4)
"""
BUILD = [
    """INSERT INTO link_clickers SELECT campaign_id, link_id, contact_id, min(clicked_at), max(clicked_at), count(*)
       FROM clicks WHERE campaign_id = $1 AND contact_id <> 0 GROUP BY 1, 2, 3""",
    """INSERT INTO campaign_clickers SELECT campaign_id, contact_id, min(clicked_at) FROM clicks
       WHERE campaign_id = $1 AND contact_id <> 0 GROUP BY 1, 2""",
    """INSERT INTO link_click_counts (campaign_id, link_id, clicks, last_click, unique_clicks)
       SELECT k.campaign_id, k.link_id, k.n, k.last, u.n FROM
         (SELECT campaign_id, link_id, count(*) n, max(clicked_at) last FROM clicks WHERE campaign_id = $1
          GROUP BY 1, 2) k
         JOIN (SELECT campaign_id, link_id, count(*) n FROM link_clickers WHERE campaign_id = $1 GROUP BY 1, 2) u
         USING (campaign_id, link_id)""",
    """INSERT INTO campaign_stats SELECT $1, (SELECT count(*) FROM clicks WHERE campaign_id = $1),
         (SELECT count(*) FROM link_clickers WHERE campaign_id = $1),
         (SELECT count(*) FROM campaign_clickers WHERE campaign_id = $1)""",
    """INSERT INTO campaign_hourly SELECT campaign_id, date_trunc('hour', clicked_at, 'UTC'), count(*) FROM clicks
       WHERE campaign_id = $1 GROUP BY 1, 2""",
]


async def load(dsn: str, clicks: int, contacts: int) -> float:
    started = time.perf_counter()
    conn = await asyncpg.connect(dsn)
    try:
        await conn.execute("SELECT clickedge_ensure_click_partitions(2, 1)")
        await campaigns.upsert_campaign(conn, CAMPAIGN, name="Bench", recipients=contacts)
        await campaigns.register_links(
            conn, CAMPAIGN, [LinkSlot(i, f"https://shop.example.com/{i % 15}", f"L{i}", "html") for i in range(1, 21)]
        )
        chunk = 1_000_000
        for done in range(0, clicks, chunk):
            await conn.execute(LOAD, CAMPAIGN, contacts, LINKS, min(chunk, clicks - done), timeout=None)
        for statement in BUILD:
            await conn.execute(statement, CAMPAIGN, timeout=None)
        await conn.execute("ANALYZE")
    finally:
        await conn.close()
    return time.perf_counter() - started


async def timed(
    http: aiohttp.ClientSession, url: str, headers: dict[str, str], n: int, *, expect: bytes = b""
) -> dict[str, float]:
    times = []
    for _ in range(n):
        started = time.perf_counter()
        async with http.get(url, headers=headers, allow_redirects=False) as resp:
            assert resp.status == 200, await resp.text()
            body = await resp.read()
            assert expect in body
        times.append((time.perf_counter() - started) * 1000)
    times.sort()
    return {"median_ms": statistics.median(times), "p99_ms": times[int(len(times) * 0.99) - 1]}


async def run(clicks: int, requests: int) -> dict[str, Any]:
    root = Path(tempfile.mkdtemp(prefix="clickedge-bench-reports-"))
    pg = EmbeddedPostgres(root / "pg", free_port())
    pg.init()
    await pg.start()
    try:
        await migrate_dsn(pg.dsn)
        contacts = max(10, clicks // 20)
        load_seconds = await load(pg.dsn, clicks, contacts)
        config = CollectorConfig(verdict_hold=0, database_url=pg.dsn, ingest_secret=SECRET, data_dir=root)
        runner = web.AppRunner(create_app(config), access_log=None)
        await runner.setup()
        port = free_port()
        await web.TCPSite(runner, "127.0.0.1", port).start()
        base = f"http://127.0.0.1:{port}"
        conn = await asyncpg.connect(pg.dsn)
        try:
            key = await apikeys.create(conn, "bench", ["read"])
            headers = {"Authorization": f"Bearer {key}"}
            # unsafe: the cookie jar keeps the session cookie of a server named by its IP address
            async with aiohttp.ClientSession(cookie_jar=aiohttp.CookieJar(unsafe=True)) as http:
                # One more batch through the real ingest path, on top of the bulk load.
                ids = EventIds()
                now_us = time.time_ns() // 1000
                rows = [
                    [
                        ids.next(now_us // 1000),
                        now_us + i,
                        CAMPAIGN,
                        1 + i % LINKS,
                        1 + i,
                        0,
                        1,
                        "192.0.2.9",
                        "ua",
                        "GET",
                    ]
                    for i in range(1000)
                ]
                async with http.post(
                    f"{base}/v1/clicks",
                    data=orjson.dumps({"v": 1, "edge": "bench", "clicks": rows}),
                    headers={"Authorization": f"Bearer {SECRET}"},
                ) as resp:
                    assert resp.status == 200
                report_url = f"{base}/v1/reports/campaigns/{CAMPAIGN}"
                async with http.get(report_url, headers=headers) as resp:
                    report = await resp.json()
                started = time.perf_counter()
                truth = await conn.fetchrow(
                    """SELECT count(*) AS clicks, count(DISTINCT (contact_id, link_id)) FILTER (WHERE contact_id <> 0)
                       AS unique_clicks, count(DISTINCT contact_id) FILTER (WHERE contact_id <> 0) AS clickers
                       FROM clicks WHERE campaign_id = $1""",
                    CAMPAIGN,
                    timeout=None,
                )
                recount_ms = (time.perf_counter() - started) * 1000
                assert truth is not None
                assert (report["clicks"], report["unique_clicks"], report["unique_clickers"]) == tuple(truth), (
                    report,
                    dict(truth),
                )
                result = {
                    "clicks": report["clicks"],
                    "contacts": contacts,
                    "load_seconds": round(load_seconds, 1),
                    "campaign_report": await timed(http, report_url, headers, requests),
                    "link_clickers_page": await timed(
                        http, f"{base}/v1/reports/campaigns/{CAMPAIGN}/links/3/clickers?limit=100", headers, requests
                    ),
                    "contact_timeline": await timed(http, f"{base}/v1/reports/contacts/42/timeline", headers, requests),
                    **await _pages(http, base, key, requests),
                    "recount_from_raw_rows_ms": round(recount_ms, 1),
                }
        finally:
            await conn.close()
            await runner.cleanup()
    finally:
        pg.stop()
        shutil.rmtree(root, ignore_errors=True)
    return result


async def _pages(http: aiohttp.ClientSession, base: str, key: str, requests: int) -> dict[str, Any]:
    """The campaign page and the campaign list, as a signed-in browser gets them."""
    async with http.post(f"{base}/ui/login", data={"key": key}, allow_redirects=False) as resp:
        assert resp.status == 303, await resp.text()
    page = await timed(http, f"{base}/ui/campaigns/{CAMPAIGN}", {}, requests, expect=b'data-machines="')
    listing = await timed(http, f"{base}/ui/?sort=clicks&order=desc", {}, requests, expect=b"Bench")
    return {"campaign_page": page, "campaign_list_page": listing}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--clicks", type=int, default=10_000_000)
    parser.add_argument("--requests", type=int, default=200)
    parser.add_argument("--json", default=None)
    args = parser.parse_args()
    result = asyncio.run(run(args.clicks, args.requests))
    print(as_json(result))
    write_json(args.json, result)
    return 0


if __name__ == "__main__":
    sys.exit(main())
