"""Retention: raw click rows older than CLICKEDGE_RETENTION_DAYS are removed; counters and reports stay.

``clicks`` is partitioned by month (schema.sql, ``clickedge_ensure_click_partitions``), so a month's rows
go by dropping its partition once the whole month is older than the cutoff (now less the retention):
instant, and nothing left for VACUUM. A raw click therefore lives at least the retention and at most a
month longer. What ``clicks_default`` holds (clicks whose month had no partition) and the refused clicks
(``refused_clicks``, by when they arrived) are deleted row by row up to the cutoff. The report tables
(per link, per campaign, per hour, clickers) are kept from clicks as they arrive and are never touched.

Partitions are found by the names ``clickedge_ensure_click_partitions`` gives them (``clicks_YYYY_MM``);
a partition an operator attached under another name is left alone. Dropping one briefly takes the lock
that making one takes (the same advisory lock, then ``clicks`` itself, as ingest's order has it), with a
lock timeout: a pass that cannot get it fails and the next one tries again.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

import asyncpg

from collector.database import rows_affected
from common.limits import MAX_RETENTION_DAYS

# The partitions of clicks, by name.
PARTITIONS = """
SELECT c.relname FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid
WHERE i.inhparent = 'clicks'::regclass ORDER BY c.relname
"""
_MONTHLY = re.compile(r"clicks_(\d{4})_(\d{2})")
LOCK_TIMEOUT = "5s"


@dataclass(frozen=True)
class Removed:
    """What a pass removed: whole monthly partitions, and rows."""

    cutoff: datetime
    partitions: tuple[str, ...] = ()
    default_rows: int = 0  # from clicks_default
    refused_rows: int = 0  # from refused_clicks


def cutoff(days: int, now: datetime | None = None) -> datetime:
    """Raw clicks from before this instant are removed."""
    if not 1 <= days <= MAX_RETENTION_DAYS:
        raise ValueError(f"retention must be 1 to {MAX_RETENTION_DAYS} days, not {days}")
    return (now or datetime.now(UTC)) - timedelta(days=days)


def month_end(name: str) -> datetime | None:
    """The end (exclusive) of the month a partition named ``clicks_YYYY_MM`` holds; None for another name."""
    match = _MONTHLY.fullmatch(name)
    if match is None:
        return None
    year, month = int(match[1]), int(match[2])
    if not 1 <= month <= 12:
        return None
    return datetime(year + month // 12, month % 12 + 1, 1, tzinfo=UTC)


def expired(names: list[str], before: datetime) -> list[str]:
    """The monthly partitions among ``names`` whose whole month lies before ``before``."""
    return [n for n in names if (end := month_end(n)) is not None and end <= before]


def months_to_keep_back(before: datetime | None, now: datetime | None = None) -> int:
    """How many past months partition maintenance makes ahead of time: 1 (last month, for its late clicks),
    or 0 when retention would drop last month's partition anyway (a retention shorter than a month)."""
    if before is None:
        return 1
    at = (now or datetime.now(UTC)).astimezone(UTC)
    return 0 if before >= datetime(at.year, at.month, 1, tzinfo=UTC) else 1


async def run(conn: asyncpg.Connection, days: int, *, now: datetime | None = None, dry_run: bool = False) -> Removed:
    """Remove the raw clicks older than ``days`` days, in one transaction (``dry_run``: say what would go,
    and remove nothing)."""
    before = cutoff(days, now)
    async with conn.transaction():
        await conn.execute(f"SET LOCAL lock_timeout = '{LOCK_TIMEOUT}'")
        names = expired([r["relname"] for r in await conn.fetch(PARTITIONS)], before)
        if dry_run:
            default_rows = await conn.fetchval("SELECT count(*) FROM clicks_default WHERE clicked_at < $1", before)
            refused_rows = await conn.fetchval("SELECT count(*) FROM refused_clicks WHERE received_at < $1", before)
            return Removed(before, tuple(names), default_rows, refused_rows)
        if names:
            await conn.execute("SELECT pg_advisory_xact_lock(hashtext('clickedge.click_partitions'))")
            await conn.execute("LOCK TABLE ONLY clicks IN ACCESS EXCLUSIVE MODE")
            for name in names:
                await conn.execute(f'DROP TABLE "{name}"')  # a name the pattern above matched
        default_rows = rows_affected(await conn.execute("DELETE FROM clicks_default WHERE clicked_at < $1", before))
        refused_rows = rows_affected(await conn.execute("DELETE FROM refused_clicks WHERE received_at < $1", before))
    return Removed(before, tuple(names), default_rows, refused_rows)
