"""One contact's data: everything stored about them, exported as JSON, or erased for good. asyncpg only.

Erasure (``DELETE /v1/contacts/{id}``, ``clickedge contacts erase ID``) removes in one transaction the
contact's clicks (settled and waiting), refused clicks, who-clicked rows, tags, automation runs, list
memberships, timeline, applied actions, one-click unsubscribes, webhooks (waiting or delivered: each body
names the contact) and recipient rows, and takes their part out of the counters, so the reports read as if
they had never clicked, unsubscribed or been sent to (clicks that retention already dropped stay counted:
nothing says whose they were).

It leaves a tombstone: HMAC-SHA256 of the contact id under a key derived from the collector's master
secret, never the id itself. Ingest checks every batch's contacts against the tombstones, so a click of an
erased contact that arrives later (a spool replayed, a late batch, an old link clicked again) is stored and
counted as an anonymous click (contact 0), never as theirs. Erasure takes an advisory lock exclusively,
ingest takes it shared for its transaction: an erasure waits for the batches being written and removes
their rows too, and a batch written after it sees its tombstone. A settling pass needs no lock: erasure
deletes the waiting clicks first, which waits for a pass that claimed some to commit. The erasure is
audited (when, by whom, the tombstone, how many rows of each kind went), without the id.
"""

from __future__ import annotations

import hashlib
import hmac
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

import asyncpg
import orjson

from collector.database import rows_affected

ERASURE_LOCK = "SELECT pg_advisory_xact_lock(hashtext('clickedge.erasure'))"
# Ingest and settling, first in their transaction: waits while an erasure runs; says whether any contact
# was ever erased (most databases: none, and no tombstone need be computed).
SHARED_LOCK = (
    "SELECT pg_advisory_xact_lock_shared(hashtext('clickedge.erasure')), EXISTS (SELECT 1 FROM erased_contacts)"
)
_KEY_LABEL = b"clickedge erasure tombstones v1"


def tombstone_key(master: bytes) -> bytes:
    """The key tombstones are made with, derived from the collector's master secret (CLICKEDGE_WEBHOOK_SECRET
    or DATA_DIR/webhook.secret): every collector, and the command line, derive the same."""
    return hmac.digest(master, _KEY_LABEL, hashlib.sha256)


def tombstone(key: bytes, contact_id: int) -> bytes:
    return hmac.digest(key, contact_id.to_bytes(8, "big"), hashlib.sha256)


async def erased_among(conn: asyncpg.Connection, key: bytes, contacts: Iterable[int]) -> set[int]:
    """Which of ``contacts`` were erased; takes the erasure lock shared, in the caller's transaction."""
    row = await conn.fetchrow(SHARED_LOCK)
    assert row is not None
    if not row[1]:
        return set()
    by_stone = {tombstone(key, c): c for c in set(contacts)}
    if not by_stone:
        return set()
    rows = await conn.fetch("SELECT tombstone FROM erased_contacts WHERE tombstone = ANY($1::bytea[])", list(by_stone))
    return {by_stone[bytes(r["tombstone"])] for r in rows}


async def is_erased(conn: asyncpg.Connection, key: bytes, contact_id: int) -> bool:
    return bool(
        await conn.fetchval(
            "SELECT EXISTS (SELECT 1 FROM erased_contacts WHERE tombstone = $1)", tombstone(key, contact_id)
        )
    )


@dataclass(frozen=True)
class Erased:
    contact_id: int
    removed: dict[str, int]  # rows removed, by table

    def as_json(self) -> dict[str, Any]:
        return {"contact_id": self.contact_id, "erased": True, "removed": self.removed}


# The contact's settled clicks, out of clicks and out of the click counters (people's clicks and the
# machines' beside them, per link, per campaign and per hour), as the settling statement counted them.
_COUNTS = """count(*) FILTER (WHERE counted) AS n,
                 count(*) FILTER (WHERE NOT counted AND verdict = 'scanner') AS scanner,
                 count(*) FILTER (WHERE NOT counted AND verdict = 'preview') AS preview,
                 count(*) FILTER (WHERE NOT counted AND verdict = 'script') AS script"""


def _less(table: str) -> str:
    return (
        f"clicks = {table}.clicks - t.n, scanner_clicks = {table}.scanner_clicks - t.scanner, "
        f"preview_clicks = {table}.preview_clicks - t.preview, script_clicks = {table}.script_clicks - t.script"
    )


_UNCOUNT_CLICKS = f"""
WITH gone AS (
    DELETE FROM clicks WHERE contact_id = $1 RETURNING campaign_id, link_id, clicked_at, verdict
), judged AS (
    SELECT g.*, (g.verdict = 'human' OR coalesce(k.count_everything, false)) AS counted,
           date_bin('1 hour', g.clicked_at, '2000-01-01 00:00+00') AS hour
    FROM gone g LEFT JOIN campaigns k USING (campaign_id)
), per_link AS (
    UPDATE link_click_counts c SET {_less("c")}
    FROM (SELECT campaign_id, link_id, {_COUNTS} FROM judged GROUP BY 1, 2) t
    WHERE c.campaign_id = t.campaign_id AND c.link_id = t.link_id
), per_campaign AS (
    UPDATE campaign_stats s SET {_less("s")}
    FROM (SELECT campaign_id, {_COUNTS} FROM judged GROUP BY 1) t
    WHERE s.campaign_id = t.campaign_id
), hourly AS (
    UPDATE campaign_hourly h SET {_less("h")}
    FROM (SELECT campaign_id, hour, {_COUNTS} FROM judged GROUP BY 1, 2) t
    WHERE h.campaign_id = t.campaign_id AND h.hour = t.hour
)
SELECT count(*) FROM gone
"""  # noqa: S608 - constants only
# Their unique clicks (one per link clicked) and their place among each campaign's clickers.
_UNCOUNT_PAIRS = """
WITH gone AS (DELETE FROM link_clickers WHERE contact_id = $1 RETURNING campaign_id, link_id),
per_link AS (
    UPDATE link_click_counts c SET unique_clicks = c.unique_clicks - t.n
    FROM (SELECT campaign_id, link_id, count(*) AS n FROM gone GROUP BY 1, 2) t
    WHERE c.campaign_id = t.campaign_id AND c.link_id = t.link_id
)
SELECT campaign_id, count(*) AS n FROM gone GROUP BY 1
"""
_UNCOUNT_CLICKERS = """
WITH gone AS (DELETE FROM campaign_clickers WHERE contact_id = $1 RETURNING campaign_id)
SELECT campaign_id, count(*) AS n FROM gone GROUP BY 1
"""
_UNCOUNT_RECIPIENTS = """
WITH gone AS (DELETE FROM campaign_recipients WHERE contact_id = $1 RETURNING campaign_id),
counted AS (
    UPDATE campaigns k SET recipients = k.recipients - 1 FROM gone g WHERE k.campaign_id = g.campaign_id
)
SELECT count(*) FROM gone
"""
_UNCOUNT_UNSUBSCRIBES = """
WITH gone AS (DELETE FROM unsubscribes WHERE contact_id = $1 RETURNING campaign_id),
counted AS (
    UPDATE campaign_stats s SET unsubscribes = s.unsubscribes - t.n
    FROM (SELECT campaign_id, count(*) AS n FROM gone GROUP BY 1) t WHERE s.campaign_id = t.campaign_id
)
SELECT count(*) FROM gone
"""
# The rest, one table each: (name, statement).
_DELETES = (
    ("pending_clicks", "DELETE FROM pending_clicks WHERE contact_id = $1"),
    ("refused_clicks", "DELETE FROM refused_clicks WHERE contact_id = $1"),
    ("contact_tags", "DELETE FROM contact_tags WHERE contact_id = $1"),
    ("automation_runs", "DELETE FROM automation_runs WHERE contact_id = $1"),
    ("list_memberships", "DELETE FROM list_memberships WHERE contact_id = $1"),
    ("contact_events", "DELETE FROM contact_events WHERE contact_id = $1"),
    ("applied_link_actions", "DELETE FROM applied_link_actions WHERE contact_id = $1"),
    ("webhook_outbox", "DELETE FROM webhook_outbox WHERE (body->>'contact_id')::bigint = $1"),
)


async def erase(conn: asyncpg.Connection, key: bytes, contact_id: int, actor: str) -> Erased:
    """Erase everything stored about ``contact_id`` and leave its tombstone, in one transaction of its own.
    Erasing an erased contact again removes what arrived since (nothing, but for a race) and is audited too."""
    removed: dict[str, int] = {}
    async with conn.transaction():
        await conn.execute(ERASURE_LOCK)
        stone = tombstone(key, contact_id)
        await conn.execute("INSERT INTO erased_contacts (tombstone) VALUES ($1) ON CONFLICT DO NOTHING", stone)
        # Waiting clicks first: a settling pass that holds some commits before this statement returns, and
        # the clicks it moved are then settled rows, which the next statement sees.
        for table, statement in _DELETES:
            removed[table] = rows_affected(await conn.execute(statement, contact_id))
        removed["clicks"] = await conn.fetchval(_UNCOUNT_CLICKS, contact_id)
        pairs = await conn.fetch(_UNCOUNT_PAIRS, contact_id)
        clickers = {r["campaign_id"]: r["n"] for r in await conn.fetch(_UNCOUNT_CLICKERS, contact_id)}
        uniques = {r["campaign_id"]: r["n"] for r in pairs}
        for campaign in sorted(uniques.keys() | clickers.keys()):
            await conn.execute(
                """UPDATE campaign_stats SET unique_clicks = unique_clicks - $2, unique_clickers = unique_clickers - $3
                   WHERE campaign_id = $1""",
                campaign,
                uniques.get(campaign, 0),
                clickers.get(campaign, 0),
            )
        removed["link_clickers"] = sum(uniques.values())
        removed["campaign_clickers"] = sum(clickers.values())
        removed["campaign_recipients"] = await conn.fetchval(_UNCOUNT_RECIPIENTS, contact_id)
        removed["unsubscribes"] = await conn.fetchval(_UNCOUNT_UNSUBSCRIBES, contact_id)
        await conn.execute(
            "INSERT INTO contact_erasures (tombstone, actor, removed) VALUES ($1, $2, $3::jsonb)",
            stone,
            actor,
            orjson.dumps(removed).decode(),
        )
    return Erased(contact_id, removed)


# Everything stored about a contact, table by table, each row as the table holds it.
_EXPORTS = (
    ("clicks", "SELECT * FROM clicks WHERE contact_id = $1 ORDER BY clicked_at, event_id"),
    ("pending_clicks", "SELECT * FROM pending_clicks WHERE contact_id = $1 ORDER BY clicked_at, event_id"),
    ("refused_clicks", "SELECT * FROM refused_clicks WHERE contact_id = $1 ORDER BY clicked_at_us, event_id"),
    ("link_clickers", "SELECT * FROM link_clickers WHERE contact_id = $1 ORDER BY campaign_id, link_id"),
    ("campaign_clickers", "SELECT * FROM campaign_clickers WHERE contact_id = $1 ORDER BY campaign_id"),
    ("campaign_recipients", "SELECT * FROM campaign_recipients WHERE contact_id = $1 ORDER BY campaign_id"),
    ("contact_tags", "SELECT * FROM contact_tags WHERE contact_id = $1 ORDER BY tag"),
    ("automation_runs", "SELECT * FROM automation_runs WHERE contact_id = $1 ORDER BY started_at, automation"),
    ("list_memberships", "SELECT * FROM list_memberships WHERE contact_id = $1 ORDER BY list"),
    ("contact_events", "SELECT * FROM contact_events WHERE contact_id = $1 ORDER BY at, id"),
    ("applied_link_actions", "SELECT * FROM applied_link_actions WHERE contact_id = $1 ORDER BY campaign_id, link_id"),
    ("webhook_outbox", "SELECT * FROM webhook_outbox WHERE (body->>'contact_id')::bigint = $1 ORDER BY id"),
    ("unsubscribes", "SELECT * FROM unsubscribes WHERE contact_id = $1 ORDER BY unsubscribed_at, campaign_id"),
)


async def export(conn: asyncpg.Connection, key: bytes, contact_id: int) -> dict[str, Any]:
    """Everything stored about ``contact_id``, as JSON-ready values, read in one snapshot."""
    out: dict[str, Any] = {"contact_id": contact_id}
    async with conn.transaction(isolation="repeatable_read", readonly=True):
        out["erased"] = await is_erased(conn, key, contact_id)
        for table, statement in _EXPORTS:
            out[table] = [_plain(dict(r)) for r in await conn.fetch(statement, contact_id)]
    return out


def _plain(row: dict[str, Any]) -> dict[str, Any]:
    """A row's values as JSON has them: timestamps in ISO 8601, ids and addresses as text, JSON as JSON."""
    plain: dict[str, Any] = {}
    for name, value in row.items():
        if hasattr(value, "isoformat"):
            value = value.isoformat()
        elif isinstance(value, str) and name in ("body", "action"):
            value = orjson.loads(value)
        elif value is not None and not isinstance(value, bool | int | float | str | list):
            value = str(value)
        plain[name] = value
    return plain
