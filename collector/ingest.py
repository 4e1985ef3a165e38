"""The collector's write path: one batch, one transaction, exactly-once effects.

Rows are copied in binary (encoded by collector/copy_binary.py) into a per-connection temporary
staging table, then moved into ``clicks`` with
``ON CONFLICT DO NOTHING RETURNING``; everything derived from a click (report counters, first clicks,
link actions, webhooks to send) is derived from the returned rows only, in the same transaction. A
redelivered batch therefore changes nothing, and the caller answers 200 only after COMMIT.
"""

from __future__ import annotations

import ipaddress
import uuid
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime

import asyncpg
import orjson

from collector import actions
from collector.copy_binary import encode_stage_rows
from collector.rules import QUALIFYING_CLICK
from common.events import Click

STAGE_COLUMNS = (
    "contact_id",
    "clicked_at",
    "event_id",
    "campaign_id",
    "link_id",
    "sent_at",
    "key_id",
    "client_ip",
    "user_agent",
    "method",
    "signals",
    "edge",
)

# Created once per pooled connection; ON COMMIT DELETE ROWS empties it after every batch.
CREATE_STAGE = """
CREATE TEMP TABLE IF NOT EXISTS click_stage (
    contact_id bigint, clicked_at timestamptz, event_id uuid, campaign_id bigint, link_id bigint,
    sent_at timestamptz, key_id integer, client_ip inet, user_agent text, method text, signals integer, edge text
) ON COMMIT DELETE ROWS
"""

# One statement, so that every derived row comes from the rows this batch actually inserted. Rows are
# locked in key order (ORDER BY) so that concurrent collectors cannot deadlock on them.
# The applied CTE's condition is collector/rules.py's QUALIFYING_CLICK, put in once when this module loads
# (an f-string: a misspelled name fails at import; a brace in this SQL would have to be doubled).
MOVE_STAGED = f"""
WITH inserted AS (
    INSERT INTO clicks (contact_id, clicked_at, event_id, campaign_id, link_id, sent_at, key_id,
                        client_ip, user_agent, method, signals, edge)
    SELECT contact_id, clicked_at, event_id, campaign_id, link_id, sent_at, key_id,
           client_ip, user_agent, method, signals, edge
    FROM click_stage
    ON CONFLICT DO NOTHING
    RETURNING contact_id, clicked_at, event_id, campaign_id, link_id
), batch_pairs AS (
    -- this batch's first and last click, and count, per contact x link
    SELECT campaign_id, link_id, contact_id, min(clicked_at) AS first_click, max(clicked_at) AS last_click,
           count(*) AS clicks
    FROM inserted WHERE contact_id <> 0
    GROUP BY campaign_id, link_id, contact_id
), pairs AS (
    -- first and last click per contact x link; (xmax = 0) tells a new pair (a unique click) from an update
    INSERT INTO link_clickers AS lc (campaign_id, link_id, contact_id, first_click, last_click, clicks)
    SELECT campaign_id, link_id, contact_id, first_click, last_click, clicks FROM batch_pairs
    ORDER BY campaign_id, link_id, contact_id
    ON CONFLICT (campaign_id, link_id, contact_id) DO UPDATE
        SET first_click = least(lc.first_click, EXCLUDED.first_click),
            last_click = greatest(lc.last_click, EXCLUDED.last_click),
            clicks = lc.clicks + EXCLUDED.clicks
    RETURNING campaign_id, link_id, contact_id, first_click, (xmax = 0) AS is_new
), clickers AS (
    -- A contact's first click in the campaign can only be one of this batch's pairs whose first click is
    -- this batch's: a new pair, or an earlier click an edge delivered late. Only those are offered; a new
    -- row is a new clicker, an update only moves the first click earlier.
    INSERT INTO campaign_clickers AS cc (campaign_id, contact_id, first_click)
    SELECT p.campaign_id, p.contact_id, min(p.first_click)
    FROM pairs p JOIN batch_pairs b USING (campaign_id, link_id, contact_id)
    WHERE p.is_new OR p.first_click = b.first_click
    GROUP BY p.campaign_id, p.contact_id ORDER BY p.campaign_id, p.contact_id
    ON CONFLICT (campaign_id, contact_id) DO UPDATE SET first_click = EXCLUDED.first_click
        WHERE EXCLUDED.first_click < cc.first_click
    RETURNING campaign_id, (xmax = 0) AS is_new
), per_link AS (
    INSERT INTO link_click_counts AS c (campaign_id, link_id, clicks, last_click, unique_clicks)
    SELECT t.campaign_id, t.link_id, t.n, t.last, coalesce(u.n, 0)
    FROM (SELECT campaign_id, link_id, count(*) AS n, max(clicked_at) AS last
          FROM inserted GROUP BY campaign_id, link_id) t
    LEFT JOIN (SELECT campaign_id, link_id, count(*) AS n FROM pairs WHERE is_new
               GROUP BY campaign_id, link_id) u USING (campaign_id, link_id)
    ORDER BY t.campaign_id, t.link_id
    ON CONFLICT (campaign_id, link_id) DO UPDATE
        SET clicks = c.clicks + EXCLUDED.clicks,
            last_click = greatest(c.last_click, EXCLUDED.last_click),
            unique_clicks = c.unique_clicks + EXCLUDED.unique_clicks
), per_campaign AS (
    INSERT INTO campaign_stats AS s (campaign_id, clicks, unique_clicks, unique_clickers)
    SELECT t.campaign_id, t.n, coalesce(u.n, 0), coalesce(k.n, 0)
    FROM (SELECT campaign_id, count(*) AS n FROM inserted GROUP BY campaign_id) t
    LEFT JOIN (SELECT campaign_id, count(*) AS n FROM pairs WHERE is_new GROUP BY campaign_id) u
        USING (campaign_id)
    LEFT JOIN (SELECT campaign_id, count(*) AS n FROM clickers WHERE is_new GROUP BY campaign_id) k
        USING (campaign_id)
    ORDER BY t.campaign_id
    ON CONFLICT (campaign_id) DO UPDATE
        SET clicks = s.clicks + EXCLUDED.clicks,
            unique_clicks = s.unique_clicks + EXCLUDED.unique_clicks,
            unique_clickers = s.unique_clickers + EXCLUDED.unique_clickers
), hourly AS (
    INSERT INTO campaign_hourly AS h (campaign_id, hour, clicks)
    SELECT campaign_id, date_trunc('hour', clicked_at, 'UTC'), count(*) FROM inserted
    GROUP BY 1, 2 ORDER BY 1, 2
    ON CONFLICT (campaign_id, hour) DO UPDATE SET clicks = h.clicks + EXCLUDED.clicks
), first_clicks AS (
    -- Each contact's first qualifying click of this batch on a link with actions: one row per contact x link,
    -- whatever event ids a batch repeats.
    SELECT DISTINCT ON (i.campaign_id, i.link_id, i.contact_id)
           i.campaign_id, i.link_id, i.contact_id, i.event_id, i.clicked_at
    FROM inserted i
    JOIN links l ON l.campaign_id = i.campaign_id AND l.link_id = i.link_id AND l.actions <> '[]'
    WHERE {QUALIFYING_CLICK}
    ORDER BY i.campaign_id, i.link_id, i.contact_id, i.clicked_at
), applied AS (
    -- The row proves a first click's actions were applied, once.
    INSERT INTO applied_link_actions (campaign_id, link_id, contact_id, event_id)
    SELECT campaign_id, link_id, contact_id, event_id FROM first_clicks
    ON CONFLICT DO NOTHING
    RETURNING campaign_id, link_id, contact_id
)
SELECT (SELECT count(*) FROM inserted) AS inserted,
       (SELECT coalesce(jsonb_agg(jsonb_build_object(
            'campaign_id', f.campaign_id, 'link_id', f.link_id, 'contact_id', f.contact_id,
            'event_id', f.event_id, 'clicked_at', f.clicked_at)), '[]')
        FROM applied a JOIN first_clicks f USING (campaign_id, link_id, contact_id)) AS applied
"""  # noqa: S608 - constants only


# Clicks refused for their time: kept once per event id, with the values as received.
REFUSE = """
INSERT INTO refused_clicks (event_id, reason, edge, clicked_at_us, campaign_id, link_id, contact_id, sent_at,
                            key_id, client_ip, user_agent, method, signals)
SELECT * FROM unnest($1::uuid[], $2::text[], $3::text[], $4::bigint[], $5::bigint[], $6::bigint[], $7::bigint[],
                     $8::bigint[], $9::integer[], $10::inet[], $11::text[], $12::text[], $13::integer[])
ON CONFLICT (event_id) DO NOTHING
RETURNING reason
"""
FUTURE = "future"
TOO_OLD = "too_old"
REASONS = (FUTURE, TOO_OLD)


@dataclass(frozen=True, slots=True)
class Refused:
    click: Click
    reason: str  # one of REASONS


@dataclass(frozen=True, slots=True)
class IngestResult:
    received: int
    inserted: int
    first_clicks_with_actions: int = 0
    refused: int = 0  # clicks of this batch refused for their time
    newly_refused: tuple[tuple[str, int], ...] = ()  # (reason, count) of those not refused before

    @property
    def duplicates(self) -> int:
        return self.received - self.inserted - self.refused


def check_clock(
    clicks: list[Click], now_us: int, max_skew_us: int, max_age_us: int
) -> tuple[list[Click], list[Refused]]:
    """Split a batch into the clicks to write and those refused for their time.

    A click more than ``max_skew_us`` ahead of the collector's clock comes from an edge whose clock is
    wrong; one older than ``max_age_us`` would land outside every kept partition. They are refused, not
    clamped: clicked_at is part of a click's primary key, so a clamped click would get a new identity on
    every redelivery (clamped to a different "now") and be counted again.
    """
    latest, earliest = now_us + max_skew_us, now_us - max_age_us
    if all(earliest <= c.clicked_at_us <= latest for c in clicks):
        return clicks, []  # the common case: one pass, no copies
    accepted: list[Click] = []
    refused: list[Refused] = []
    for click in clicks:
        if click.clicked_at_us > latest:
            refused.append(Refused(click, FUTURE))
        elif click.clicked_at_us < earliest:
            refused.append(Refused(click, TOO_OLD))
        else:
            accepted.append(click)
    return accepted, refused


async def prepare_connection(conn: asyncpg.Connection) -> None:
    await conn.execute(CREATE_STAGE)


async def ingest(
    conn: asyncpg.Connection, edge: str, clicks: list[Click], refused: Sequence[Refused] = ()
) -> IngestResult:
    """Write one batch exactly once: its clicks, and the refused ones to refused_clicks, in one transaction.
    Returns after COMMIT; raises on any database error (nothing kept)."""
    if not clicks and not refused:
        return IngestResult(0, 0)
    received = len(clicks) + len(refused)
    async with conn.transaction():
        inserted, applied = await _write_clicks(conn, edge, clicks) if clicks else (0, [])
        newly = await _write_refused(conn, edge, refused) if refused else ()
    return IngestResult(received, inserted, len(applied), len(refused), newly)


async def _write_clicks(
    conn: asyncpg.Connection, edge: str, clicks: list[Click]
) -> tuple[int, list[actions.AppliedClick]]:
    rows = encode_stage_rows(edge, clicks)
    # A memoryview: asyncpg would take bytes for a file name.
    await conn.copy_to_table("click_stage", source=memoryview(rows), columns=STAGE_COLUMNS, format="binary")
    row = await conn.fetchrow(MOVE_STAGED)
    assert row is not None
    applied = _applied(row["applied"])
    if applied:
        await actions.apply(conn, applied)
    return int(row["inserted"]), applied


def _applied(raw: str) -> list[actions.AppliedClick]:
    """MOVE_STAGED's ``applied`` column: a JSON array of the first clicks whose link actions are now due."""
    return [
        actions.AppliedClick(
            a["campaign_id"],
            a["link_id"],
            a["contact_id"],
            uuid.UUID(a["event_id"]),
            datetime.fromisoformat(a["clicked_at"]),
        )
        for a in orjson.loads(raw)
    ]


async def _write_refused(
    conn: asyncpg.Connection, edge: str, refused: Sequence[Refused]
) -> tuple[tuple[str, int], ...]:
    # Sorted by event id: concurrent batches with the same refused clicks lock their rows in one order.
    ordered = sorted(refused, key=lambda r: r.click.event_id)
    clicks = [r.click for r in ordered]
    rows = await conn.fetch(
        REFUSE,
        [uuid.UUID(bytes=c.event_id) for c in clicks],
        [r.reason for r in ordered],
        [edge] * len(clicks),
        [c.clicked_at_us for c in clicks],
        [c.campaign_id for c in clicks],
        [c.link_id for c in clicks],
        [c.contact_id for c in clicks],
        [c.sent_at for c in clicks],
        [c.key_id for c in clicks],
        [ipaddress.ip_address(c.client_ip) if c.client_ip else None for c in clicks],
        [c.user_agent for c in clicks],
        [c.method for c in clicks],
        [c.signals for c in clicks],
    )
    counts = Counter(r["reason"] for r in rows)
    return tuple((reason, counts[reason]) for reason in REASONS if counts[reason])
