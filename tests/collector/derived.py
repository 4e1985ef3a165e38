"""Everything ingest writes for a campaign, read back whole, for the tests that claim a batch delivered
again "changes nothing" and the ones that claim nothing was counted twice.

``snapshot`` reads every table the write path (collector/ingest.py and the link actions it applies,
collector/actions.py) writes: the click rows, the refused clicks, every report table, the applied actions,
the contact state they change, the timeline and the webhook outbox. Two snapshots around a redelivery must
be equal. tests/collector/test_schema.py checks that no table the write path writes is missing here.

``recount`` derives the report tables from the click rows the slow way, as the reports property test does
for the API's numbers: after concurrent collectors, lost COMMIT replies and resent batches, every counter
must still equal its recount.
"""

from __future__ import annotations

from typing import Any

import asyncpg

Rows = list[tuple[Any, ...]]

# Tables with a campaign_id column: all their columns, in a fixed order.
BY_CAMPAIGN = {
    "clicks": "contact_id, clicked_at, event_id",
    "pending_clicks": "contact_id, clicked_at, event_id",
    "refused_clicks": "event_id",
    "link_click_counts": "link_id",
    "link_clickers": "link_id, contact_id",
    "campaign_clickers": "contact_id",
    "campaign_stats": "campaign_id",
    "campaign_hourly": "hour",
    "applied_link_actions": "link_id, contact_id",
    "contact_events": "id",
    "unsubscribes": "contact_id",
}
# Contact state link actions change: the rows of the contacts who clicked in the campaign.
BY_CONTACT = {
    "contact_tags": "contact_id, tag",
    "list_memberships": "contact_id, list",
    "automation_runs": "contact_id, automation, started_at",
}
# The outbox rows the campaign's clicks queued. Their delivery state (attempts, next_attempt_at,
# delivered_at, failed_at, last_error) is left out: a collector's deliverer changes it at any moment.
OUTBOX = """SELECT id, idempotency_key, url, body::text, created_at FROM webhook_outbox
WHERE (body->'campaign'->>'id')::bigint = $1 ORDER BY id"""
TABLES = frozenset({*BY_CAMPAIGN, *BY_CONTACT, "webhook_outbox"})


async def snapshot(conn: asyncpg.Connection, campaign_id: int, contacts: tuple[int, ...] = ()) -> dict[str, Rows]:
    """Every row ingest wrote for ``campaign_id``, table by table; the contact tables for the contacts who
    clicked in it, and ``contacts``."""
    out: dict[str, Rows] = {}
    for table, order in BY_CAMPAIGN.items():
        query = f"SELECT * FROM {table} WHERE campaign_id = $1 ORDER BY {order}"  # noqa: S608 - names from here
        out[table] = [tuple(r) for r in await conn.fetch(query, campaign_id)]
    clicked = await conn.fetch(
        "SELECT DISTINCT contact_id FROM clicks WHERE campaign_id = $1 AND contact_id <> 0", campaign_id
    )
    everyone = sorted({r["contact_id"] for r in clicked} | set(contacts))
    for table, order in BY_CONTACT.items():
        query = f"SELECT * FROM {table} WHERE contact_id = ANY($1) ORDER BY {order}"  # noqa: S608 - names from here
        out[table] = [tuple(r) for r in await conn.fetch(query, everyone)]
    out["webhook_outbox"] = [tuple(r) for r in await conn.fetch(OUTBOX, campaign_id)]
    return out


# The campaign's clicks, each marked counted (a person's, or any click of a campaign that counts everything).
JUDGED = """(SELECT c.*, (c.verdict = 'human' OR coalesce(k.count_everything, false)) AS counted
             FROM clicks c LEFT JOIN campaigns k USING (campaign_id) WHERE c.campaign_id = $1) j"""
AUTOMATED = """count(*) FILTER (WHERE NOT counted AND verdict = 'scanner'),
               count(*) FILTER (WHERE NOT counted AND verdict = 'preview'),
               count(*) FILTER (WHERE NOT counted AND verdict = 'script')"""

# Each report table as stored, and as derived from the click rows; contact 0 (anonymous) has no unique rows.
RECOUNTS = {
    "link_click_counts": (
        """SELECT link_id, clicks, last_click, unique_clicks, scanner_clicks, preview_clicks, script_clicks
           FROM link_click_counts WHERE campaign_id = $1""",
        f"""SELECT link_id, count(*) FILTER (WHERE counted), max(clicked_at) FILTER (WHERE counted),
                   count(DISTINCT nullif(contact_id, 0)) FILTER (WHERE counted), {AUTOMATED}
            FROM {JUDGED} GROUP BY link_id""",  # noqa: S608 - constants only
    ),
    "link_clickers": (
        "SELECT link_id, contact_id, first_click, last_click, clicks FROM link_clickers WHERE campaign_id = $1",
        f"""SELECT link_id, contact_id, min(clicked_at), max(clicked_at), count(*)
            FROM {JUDGED} WHERE contact_id <> 0 AND counted GROUP BY link_id, contact_id""",  # noqa: S608 - constants only
    ),
    "campaign_clickers": (
        "SELECT contact_id, first_click FROM campaign_clickers WHERE campaign_id = $1",
        f"""SELECT contact_id, min(clicked_at) FROM {JUDGED} WHERE contact_id <> 0 AND counted
            GROUP BY contact_id""",  # noqa: S608 - constants only
    ),
    "campaign_stats": (
        """SELECT clicks, unique_clicks, unique_clickers, scanner_clicks, preview_clicks, script_clicks
           FROM campaign_stats WHERE campaign_id = $1""",
        f"""SELECT count(*) FILTER (WHERE counted),
                   count(DISTINCT (link_id, contact_id)) FILTER (WHERE contact_id <> 0 AND counted),
                   count(DISTINCT contact_id) FILTER (WHERE contact_id <> 0 AND counted), {AUTOMATED}
            FROM {JUDGED} GROUP BY campaign_id""",  # noqa: S608 - constants only
    ),
    "campaign_hourly": (
        """SELECT hour, clicks, scanner_clicks, preview_clicks, script_clicks FROM campaign_hourly
           WHERE campaign_id = $1""",
        f"""SELECT date_trunc('hour', clicked_at, 'UTC'), count(*) FILTER (WHERE counted), {AUTOMATED}
            FROM {JUDGED} GROUP BY 1""",  # noqa: S608 - constants only
    ),
}


async def recount(conn: asyncpg.Connection, campaign_id: int) -> dict[str, tuple[Rows, Rows]]:
    """The report tables whose rows differ from a recount of the campaign's click rows: table -> (stored,
    recounted). Empty when every counter is right."""
    wrong: dict[str, tuple[Rows, Rows]] = {}
    for table, (stored_sql, recount_sql) in RECOUNTS.items():
        stored = sorted(tuple(r) for r in await conn.fetch(stored_sql, campaign_id))
        derived = sorted(tuple(r) for r in await conn.fetch(recount_sql, campaign_id))
        if stored != derived:
            wrong[table] = (stored, derived)
    return wrong
