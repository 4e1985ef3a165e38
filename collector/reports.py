"""Reports, read from the tables settling keeps up to date; never from raw click rows, except a single
contact's timeline, which reads that contact's clicks through the primary key's contact_id prefix.

Clicks, unique clicks, clickers and the click-through rate count people (collector/classify.py); each report
shows the machines' clicks beside them, by verdict (``automated``), and how many clicks still wait for their
verdict (``pending``)."""

from __future__ import annotations

from collections import defaultdict
from typing import Any

import asyncpg
import orjson

from collector.campaigns import NotFound
from collector.classify import AUTOMATED


async def campaign(conn: asyncpg.Connection, campaign_id: int) -> dict[str, Any]:
    head = await conn.fetchrow(
        """SELECT c.name, c.tracking, coalesce(c.recipients, 0) AS recipients,
                  coalesce(s.clicks, 0) AS clicks, coalesce(s.unique_clicks, 0) AS unique_clicks,
                  coalesce(s.unique_clickers, 0) AS unique_clickers, c.campaign_id IS NOT NULL AS known,
                  coalesce(s.scanner_clicks, 0) AS scanner_clicks, coalesce(s.preview_clicks, 0) AS preview_clicks,
                  coalesce(s.script_clicks, 0) AS script_clicks, coalesce(c.count_everything, false) AS everything,
                  coalesce(s.unsubscribes, 0) AS unsubscribes,
                  (SELECT count(*) FROM pending_clicks WHERE campaign_id = $1) AS pending,
                  s.campaign_id IS NOT NULL AS clicked
           FROM (SELECT $1::bigint AS campaign_id) k
           LEFT JOIN campaigns c USING (campaign_id) LEFT JOIN campaign_stats s USING (campaign_id)""",
        campaign_id,
    )
    assert head is not None
    if not head["known"] and not head["clicked"] and not head["pending"]:
        raise NotFound(f"campaign {campaign_id} has neither a registration nor clicks")
    links = await conn.fetch(
        """SELECT link_id, coalesce(l.name, '') AS name, l.destination,
                  coalesce(k.clicks, 0) AS clicks, coalesce(k.unique_clicks, 0) AS unique_clicks,
                  coalesce(k.scanner_clicks, 0) AS scanner_clicks, coalesce(k.preview_clicks, 0) AS preview_clicks,
                  coalesce(k.script_clicks, 0) AS script_clicks
           FROM (SELECT link_id, name, destination FROM links WHERE campaign_id = $1 AND NOT decoy) l
           FULL JOIN (SELECT link_id, clicks, unique_clicks, scanner_clicks, preview_clicks, script_clicks
                      FROM link_click_counts WHERE campaign_id = $1
                      AND link_id NOT IN (SELECT link_id FROM links WHERE campaign_id = $1 AND decoy)) k
               USING (link_id)
           ORDER BY link_id""",
        campaign_id,
    )
    hours = await conn.fetch(
        """SELECT hour, clicks, scanner_clicks, preview_clicks, script_clicks FROM campaign_hourly
           WHERE campaign_id = $1 ORDER BY hour""",
        campaign_id,
    )
    by_url: dict[str, dict[str, Any]] = defaultdict(
        lambda: {"placements": [], "clicks": 0, "unique_clicks": 0, "automated": dict.fromkeys(AUTOMATED, 0)}
    )
    for link in links:
        if link["destination"] is not None:
            entry = by_url[link["destination"]]
            entry["placements"].append(link["link_id"])
            entry["clicks"] += link["clicks"]
            entry["unique_clicks"] += link["unique_clicks"]
            for verdict in AUTOMATED:
                entry["automated"][verdict] += link[f"{verdict}_clicks"]
    recipients = head["recipients"]
    return {
        "campaign": {"id": campaign_id, "name": head["name"] or "", "tracking": head["tracking"]},
        "recipients": recipients,
        "clicks": head["clicks"],
        "unique_clicks": head["unique_clicks"],
        "unique_clickers": head["unique_clickers"],
        "click_through_rate": round(head["unique_clickers"] / recipients, 6) if recipients else None,
        "automated": automated(head),
        "pending": head["pending"],
        "count_everything": head["everything"],
        "unsubscribes": head["unsubscribes"],
        "links": [
            {
                "id": r["link_id"],
                "name": r["name"],
                "destination": r["destination"],
                "clicks": r["clicks"],
                "unique_clicks": r["unique_clicks"],
                "automated": automated(r),
            }
            for r in links
        ],
        "urls": [{"destination": url, **entry} for url, entry in sorted(by_url.items())],
        "hourly": [{"hour": r["hour"].isoformat(), "clicks": r["clicks"], "automated": automated(r)} for r in hours],
    }


# The campaign list's sort keys, each an SQL expression over the list's columns.
CAMPAIGN_SORTS = {
    "id": "campaign_id",
    "name": "lower(name)",
    "recipients": "recipients",
    "clickers": "unique_clickers",
    "ctr": "unique_clickers::float8 / nullif(recipients, 0)",
    "clicks": "clicks",
    "machines": "machine_clicks",
    "last_click": "last_click",
}


async def campaigns(
    conn: asyncpg.Connection, *, sort: str = "id", descending: bool = True, limit: int = 50, offset: int = 0
) -> dict[str, Any]:
    """Every campaign (registered, or only clicked), a page at a time: recipients, people who clicked, the
    click-through rate, people's and machines' clicks, and the last click by a person."""
    order = CAMPAIGN_SORTS[sort]
    direction = "DESC NULLS LAST" if descending else "ASC NULLS FIRST"
    rows = await conn.fetch(
        f"""SELECT * FROM (
                SELECT i.campaign_id, coalesce(c.name, '') AS name, coalesce(c.tracking, true) AS tracking,
                       coalesce(c.recipients, 0) AS recipients, coalesce(s.unique_clickers, 0) AS unique_clickers,
                       coalesce(s.clicks, 0) AS clicks, coalesce(s.scanner_clicks, 0) AS scanner_clicks,
                       coalesce(s.preview_clicks, 0) AS preview_clicks, coalesce(s.script_clicks, 0) AS script_clicks,
                       coalesce(s.scanner_clicks + s.preview_clicks + s.script_clicks, 0) AS machine_clicks,
                       coalesce(s.unsubscribes, 0) AS unsubscribes,
                       (SELECT max(last_click) FROM link_click_counts k WHERE k.campaign_id = i.campaign_id)
                           AS last_click
                FROM (SELECT campaign_id FROM campaigns UNION SELECT campaign_id FROM campaign_stats) i
                LEFT JOIN campaigns c USING (campaign_id) LEFT JOIN campaign_stats s USING (campaign_id)
            ) t ORDER BY {order} {direction}, campaign_id {"DESC" if descending else "ASC"}
            LIMIT $1 OFFSET $2""",  # noqa: S608 - the order is one of CAMPAIGN_SORTS' constants
        limit,
        offset,
    )
    total = await conn.fetchval(
        "SELECT count(*) FROM (SELECT campaign_id FROM campaigns UNION SELECT campaign_id FROM campaign_stats) i"
    )
    return {
        "campaigns": [
            {
                "id": r["campaign_id"],
                "name": r["name"],
                "tracking": r["tracking"],
                "recipients": r["recipients"],
                "unique_clickers": r["unique_clickers"],
                "click_through_rate": round(r["unique_clickers"] / r["recipients"], 6) if r["recipients"] else None,
                "clicks": r["clicks"],
                "automated": automated(r),
                "machine_clicks": r["machine_clicks"],
                "unsubscribes": r["unsubscribes"],
                "last_click": r["last_click"].isoformat() if r["last_click"] else None,
            }
            for r in rows
        ],
        "total": total,
        "next_offset": offset + limit if offset + limit < total else None,
    }


def automated(row: Any) -> dict[str, int]:
    """The machines' clicks of a report row, by verdict."""
    return {verdict: row[f"{verdict}_clicks"] for verdict in AUTOMATED}


async def link_clickers(
    conn: asyncpg.Connection, campaign_id: int, link_id: int, *, after: int = 0, limit: int = 100
) -> dict[str, Any]:
    """Who clicked one link placement, by contact id, a page at a time (``after`` is the last id seen)."""
    rows = await conn.fetch(
        """SELECT contact_id, first_click, last_click, clicks, first_reasons FROM link_clickers
           WHERE campaign_id = $1 AND link_id = $2 AND contact_id > $3 ORDER BY contact_id LIMIT $4""",
        campaign_id,
        link_id,
        after,
        limit,
    )
    items = [
        {
            "contact_id": r["contact_id"],
            "first_click": r["first_click"].isoformat(),
            "last_click": r["last_click"].isoformat(),
            "clicks": r["clicks"],
            # Who clicked counts people: each row's first click was judged a person's, for these reasons.
            "verdict": "human",
            "verdict_reasons": r["first_reasons"],
        }
        for r in rows
    ]
    return {"clickers": items, "next_after": items[-1]["contact_id"] if len(items) == limit else None}


async def unsubscribes(
    conn: asyncpg.Connection, campaign_id: int, *, after: int = 0, limit: int = 100
) -> dict[str, Any]:
    """Who unsubscribed with the campaign's messages (one-click), by contact id, a page at a time."""
    rows = await conn.fetch(
        """SELECT contact_id, unsubscribed_at, list FROM unsubscribes
           WHERE campaign_id = $1 AND contact_id > $2 ORDER BY contact_id LIMIT $3""",
        campaign_id,
        after,
        limit,
    )
    items = [
        {"contact_id": r["contact_id"], "unsubscribed_at": r["unsubscribed_at"].isoformat(), "list": r["list"]}
        for r in rows
    ]
    return {"unsubscribes": items, "next_after": items[-1]["contact_id"] if len(items) == limit else None}


async def contact_timeline(
    conn: asyncpg.Connection, contact_id: int, *, limit: int = 1000, offset: int = 0
) -> list[dict[str, Any]]:
    """Every click, every action applied and every one-click unsubscribe of one contact, with names, a page at a
    time: in time order, each click before the actions it triggered, and those in the order the link lists them
    (``position``; rows written before that column existed have position 0 and keep their insertion order,
    ``id``). An unsubscribe has no link (null)."""
    rows = await conn.fetch(
        """SELECT * FROM (
               SELECT 'click' AS kind, k.clicked_at AS at, k.campaign_id, c.name AS campaign, k.link_id,
                      l.name AS link, l.destination, k.method, NULL::jsonb AS action, k.event_id,
                      0 AS position, 0::bigint AS id, k.verdict, k.verdict_reasons
               FROM clicks k
               LEFT JOIN campaigns c ON c.campaign_id = k.campaign_id
               LEFT JOIN links l ON l.campaign_id = k.campaign_id AND l.link_id = k.link_id
               WHERE k.contact_id = $1
               UNION ALL
               -- clicks still waiting for their verdict: shown, with none
               SELECT 'click', k.clicked_at, k.campaign_id, c.name, k.link_id, l.name, l.destination, k.method,
                      NULL, k.event_id, 0, 0, NULL, NULL
               FROM pending_clicks k
               LEFT JOIN campaigns c ON c.campaign_id = k.campaign_id
               LEFT JOIN links l ON l.campaign_id = k.campaign_id AND l.link_id = k.link_id
               WHERE k.contact_id = $1
               UNION ALL
               -- a one-click unsubscribe (its action says via) is its own kind, of no link
               SELECT CASE WHEN e.action ? 'via' THEN 'unsubscribe' ELSE 'action' END, e.at, e.campaign_id, c.name,
                      e.link_id, l.name, l.destination, NULL, e.action, e.event_id, e.position, e.id, NULL, NULL
               FROM contact_events e
               LEFT JOIN campaigns c ON c.campaign_id = e.campaign_id
               LEFT JOIN links l ON l.campaign_id = e.campaign_id AND l.link_id = e.link_id AND NOT e.action ? 'via'
               WHERE e.contact_id = $1
           ) t ORDER BY at, kind DESC, event_id, position, id LIMIT $2 OFFSET $3""",
        contact_id,
        limit,
        offset,
    )
    return [
        {
            "kind": r["kind"],
            "at": r["at"].isoformat(),
            "campaign": {"id": r["campaign_id"], "name": r["campaign"] or ""},
            "link": None
            if r["kind"] == "unsubscribe"
            else {"id": r["link_id"], "name": r["link"] or "", "destination": r["destination"]},
            **(_click(r) if r["kind"] == "click" else {"action": orjson.loads(r["action"])}),
            "event_id": str(r["event_id"]),
        }
        for r in rows
    ]


def _click(row: Any) -> dict[str, Any]:
    """A click's entry: its method, and its verdict with reasons (both null while the verdict is pending)."""
    return {"method": row["method"], "verdict": row["verdict"], "verdict_reasons": row["verdict_reasons"]}
