"""Retention: monthly partitions of raw clicks wholly older than CLICKEDGE_RETENTION_DAYS are dropped, rows
of clicks_default and refused_clicks deleted; reports stay. On a database of its own (dropping partitions
of past months would take other tests' rows), with clicks written by the collector's own ingest."""

from __future__ import annotations

import re
import uuid
from datetime import UTC, datetime, timedelta

import asyncpg
import pytest
from aiohttp.test_utils import TestClient, TestServer

from collector import ingest, retention, settle
from collector.app import create_app
from collector.config import CollectorConfig
from collector.schema import migrate_dsn
from common.events import Click, EventIds, decode_batch
from tests.clickedge.test_cli import clickedge
from tests.conftest import INGEST_SECRET, NewDatabase, eventually

NOW = datetime(2026, 11, 20, 12, tzinfo=UTC)
_ids = EventIds()


def at(year: int, month: int, day: int = 15) -> datetime:
    return datetime(year, month, day, 12, tzinfo=UTC)


def clicks(campaign: int, times: list[datetime]) -> list[Click]:
    wire = []
    for n, when in enumerate(times):
        us = int(when.timestamp() * 1_000_000)
        wire.append([_ids.next(us // 1000), us, campaign, 1, 1000 + n, int(when.timestamp()) - 3600, 1, "192.0.2.1",
                     "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/131.0 "
                     "Safari/537.36", "GET"])  # fmt: skip
    return decode_batch({"v": 1, "edge": "e", "clicks": wire})[1]


async def partitions(conn: asyncpg.Connection) -> list[str]:
    return [r["relname"] for r in await conn.fetch(retention.PARTITIONS)]


@pytest.fixture
async def old_dsn(new_database: NewDatabase) -> str:
    """A database with a partition for every month since 2024-05, and clicks of campaign 7 in 2025-03
    (two), 2025-12 and 2026-11, counted in its reports."""
    dsn = await new_database()
    await migrate_dsn(dsn)
    conn = await asyncpg.connect(dsn)
    try:
        today = datetime.now(UTC)
        await conn.fetchval(
            "SELECT clickedge_ensure_click_partitions($1, 0)", (today.year - 2024) * 12 + today.month - 5
        )
        await ingest.prepare_connection(conn)
        batch = clicks(7, [at(2025, 3), at(2025, 3, 16), at(2025, 12), at(2026, 11)])
        await ingest.ingest(conn, "e", batch, judge=settle.SETTLE_AT_ONCE)
    finally:
        await conn.close()
    return dsn


def test_a_month_goes_once_all_of_it_is_older_than_the_cutoff() -> None:
    assert retention.month_end("clicks_2025_12") == datetime(2026, 1, 1, tzinfo=UTC)
    assert retention.month_end("clicks_2026_02") == datetime(2026, 3, 1, tzinfo=UTC)
    for other in ("clicks_default", "clicks_2026_13", "clicks_2026_1", "my_clicks_2026_01", "clicks_2026_01_old"):
        assert retention.month_end(other) is None
    names = ["clicks_2026_07", "clicks_2026_08", "clicks_default", "archive"]
    # 2026-08-31 is within the retention: August stays whole.
    assert retention.expired(names, datetime(2026, 8, 31, tzinfo=UTC)) == ["clicks_2026_07"]
    assert retention.expired(names, datetime(2026, 9, 1, tzinfo=UTC)) == ["clicks_2026_07", "clicks_2026_08"]
    assert retention.cutoff(30, NOW) == NOW - timedelta(days=30)
    with pytest.raises(ValueError, match="1 to 36500 days"):
        retention.cutoff(0, NOW)


def test_last_months_partition_is_made_ahead_only_while_retention_keeps_it() -> None:
    assert retention.months_to_keep_back(None, NOW) == 1
    assert retention.months_to_keep_back(retention.cutoff(90, NOW), NOW) == 1
    assert retention.months_to_keep_back(retention.cutoff(7, NOW), NOW) == 0  # 13 November: October goes


async def test_retention_drops_old_months_and_keeps_reports(old_dsn: str) -> None:
    conn = await asyncpg.connect(old_dsn)
    await ingest.prepare_connection(conn)
    report = await conn.fetchrow("SELECT clicks, unique_clickers FROM campaign_stats WHERE campaign_id = 7")
    assert tuple(report) == (4, 4)
    # A click whose month had no partition, and a refused click that arrived long ago.
    await conn.execute("DROP TABLE clicks_2024_06")
    batch = clicks(7, [at(2024, 6)])
    await ingest.ingest(conn, "e", batch, judge=settle.SETTLE_AT_ONCE)
    assert await conn.fetchval("SELECT count(*) FROM clicks_default") == 1
    await conn.execute(
        "INSERT INTO refused_clicks (event_id, reason, edge, clicked_at_us, campaign_id, link_id, sent_at, key_id,"
        " user_agent, method, received_at) VALUES ($1, 'too_old', 'e', 0, 7, 1, 0, 1, '', 'GET', $2)",
        uuid.uuid4(),
        at(2025, 1),
    )

    dry = await retention.run(conn, 365, now=NOW, dry_run=True)
    assert dry.partitions[0] == "clicks_2024_05" and dry.partitions[-1] == "clicks_2025_10"
    assert "clicks_2025_11" not in dry.partitions  # 2025-11-20 is the cutoff: November is partly within
    assert (dry.default_rows, dry.refused_rows) == (1, 1)
    assert "clicks_2025_03" in await partitions(conn)  # a dry run removes nothing

    removed = await retention.run(conn, 365, now=NOW)
    assert removed.partitions == dry.partitions
    assert (removed.default_rows, removed.refused_rows) == (1, 1)
    left = await partitions(conn)
    assert "clicks_2025_03" not in left and {"clicks_2025_11", "clicks_2025_12", "clicks_default"} <= set(left)
    kept = await conn.fetch("SELECT clicked_at FROM clicks WHERE campaign_id = 7 ORDER BY clicked_at")
    assert [r["clicked_at"] for r in kept] == [at(2025, 12), at(2026, 11)]
    assert await conn.fetchval("SELECT count(*) FROM refused_clicks") == 0
    # The reports were kept from the clicks as they arrived: nothing in them changes (the 2024 click was
    # contact 1000's second).
    report = await conn.fetchrow("SELECT clicks, unique_clickers FROM campaign_stats WHERE campaign_id = 7")
    assert tuple(report) == (5, 4)
    assert await conn.fetchval("SELECT sum(clicks) FROM campaign_hourly WHERE campaign_id = 7") == 5

    again = await retention.run(conn, 365, now=NOW)
    assert (again.partitions, again.default_rows, again.refused_rows) == ((), 0, 0)
    await conn.close()


async def test_clickedge_retention_run(old_dsn: str) -> None:
    dsn = old_dsn
    unset = clickedge("retention", "run", "--database-url", dsn, env={"CLICKEDGE_RETENTION_DAYS": ""})
    assert unset.returncode == 2
    assert unset.stderr.strip().endswith("(unset, every click is kept)")
    bad = clickedge("retention", "run", "--database-url", dsn, "--retention-days", "0")
    assert (
        bad.returncode == 2 and "--retention-days='0' is not valid: must be a whole number of at least 1" in bad.stderr
    )
    bad = clickedge("retention", "run", "--database-url", dsn, env={"CLICKEDGE_RETENTION_DAYS": "36501"})
    assert bad.returncode == 2 and "CLICKEDGE_RETENTION_DAYS" in bad.stderr and "at most 36500" in bad.stderr

    days = (datetime.now(UTC) - at(2025, 6)).days  # March 2025 is wholly older; December is not
    dry = clickedge("retention", "run", "--dry-run", "--database-url", dsn, env={"CLICKEDGE_RETENTION_DAYS": str(days)})
    assert dry.returncode == 0, dry.stderr
    assert "would drop" in dry.stdout and "clicks_2025_03" in dry.stdout
    done = clickedge("retention", "run", "--database-url", dsn, env={"CLICKEDGE_RETENTION_DAYS": str(days)})
    assert done.returncode == 0, done.stderr
    assert "dropped" in done.stdout and "clicks_2025_03" in done.stdout
    conn = await asyncpg.connect(dsn)
    try:
        assert await conn.fetchval("SELECT count(*) FROM clicks WHERE campaign_id = 7") == 2
        assert await conn.fetchval("SELECT clicks FROM campaign_stats WHERE campaign_id = 7") == 4
    finally:
        await conn.close()


async def test_the_collector_applies_retention_at_start_and_says_so_in_its_metrics(old_dsn: str) -> None:
    days = (datetime.now(UTC) - at(2025, 6)).days
    config = CollectorConfig(database_url=old_dsn, ingest_secret=INGEST_SECRET, retention_days=days)
    conn = await asyncpg.connect(old_dsn)
    try:
        async with TestClient(TestServer(create_app(config))) as client:

            async def gone() -> bool:
                return "clicks_2025_03" not in await partitions(conn)

            await eventually(gone)
            text = await (await client.get("/metrics")).text()
            dropped = re.search(r"^clickedge_collector_retention_partitions_dropped_total (\S+)$", text, re.M)
            assert dropped is not None and float(dropped[1]) >= 1
            assert "clickedge_collector_retention_last_success_timestamp_seconds 0.0" not in text
        assert await conn.fetchval("SELECT count(*) FROM clicks WHERE campaign_id = 7") == 2
        assert await conn.fetchval("SELECT clicks FROM campaign_stats WHERE campaign_id = 7") == 4
    finally:
        await conn.close()
