"""The collector's write path: one batch, one transaction, exactly-once effects.

Rows are copied in binary into a per-connection temporary staging table, then moved into ``clicks`` with
``ON CONFLICT DO NOTHING RETURNING``; everything derived from a click (the per-link counters) is derived
from the returned rows only, in the same transaction. A redelivered batch therefore changes nothing, and
the caller answers 200 only after COMMIT.
"""

from __future__ import annotations

from dataclasses import dataclass

import asyncpg

from clickedge.events import Click

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
    "edge",
)

# Created once per pooled connection; ON COMMIT DELETE ROWS empties it after every batch.
CREATE_STAGE = """
CREATE TEMP TABLE IF NOT EXISTS click_stage (
    contact_id bigint, clicked_at timestamptz, event_id uuid, campaign_id bigint, link_id bigint,
    sent_at timestamptz, key_id integer, client_ip inet, user_agent text, method text, edge text
) ON COMMIT DELETE ROWS
"""

# Counter rows are locked in key order so that concurrent collectors cannot deadlock on them.
MOVE_STAGED = """
WITH inserted AS (
    INSERT INTO clicks (contact_id, clicked_at, event_id, campaign_id, link_id, sent_at, key_id,
                        client_ip, user_agent, method, edge)
    SELECT contact_id, clicked_at, event_id, campaign_id, link_id, sent_at, key_id,
           client_ip, user_agent, method, edge
    FROM click_stage
    ON CONFLICT DO NOTHING
    RETURNING campaign_id, link_id, clicked_at
), counted AS (
    INSERT INTO link_click_counts AS c (campaign_id, link_id, clicks, last_click)
    SELECT campaign_id, link_id, count(*), max(clicked_at)
    FROM inserted GROUP BY campaign_id, link_id ORDER BY campaign_id, link_id
    ON CONFLICT (campaign_id, link_id) DO UPDATE
        SET clicks = c.clicks + EXCLUDED.clicks,
            last_click = greatest(c.last_click, EXCLUDED.last_click)
)
SELECT count(*) FROM inserted
"""


@dataclass(frozen=True, slots=True)
class IngestResult:
    received: int
    inserted: int

    @property
    def duplicates(self) -> int:
        return self.received - self.inserted


async def prepare_connection(conn: asyncpg.Connection) -> None:
    await conn.execute(CREATE_STAGE)


async def ingest(conn: asyncpg.Connection, edge: str, clicks: list[Click]) -> IngestResult:
    """Write one batch exactly once. Returns after COMMIT; raises on any database error (nothing kept)."""
    if not clicks:
        return IngestResult(0, 0)
    records = [
        (
            c.contact_id or 0,
            c.clicked_at,
            c.event_id,
            c.campaign_id,
            c.link_id,
            c.sent_at,
            c.key_id,
            c.client_ip,
            c.user_agent,
            c.method,
            edge,
        )
        for c in clicks
    ]
    async with conn.transaction():
        await conn.copy_records_to_table("click_stage", records=records, columns=STAGE_COLUMNS)
        inserted: int = await conn.fetchval(MOVE_STAGED)
    return IngestResult(len(clicks), inserted)
