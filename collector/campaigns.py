"""Campaigns, their registered links, link actions and their audit log. asyncpg only."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import asyncpg
import orjson

from collector import actions, endpoints
from collector.destinations import Networks
from links.rewrite import LinkSlot


class NotFound(LookupError):
    pass


class Conflict(ValueError):
    pass


_CAMPAIGN_COLUMNS = (
    "campaign_id, name, tracking, recipients, tracking_url, count_everything, decoy_link, anonymous, "
    "full_client_ips, unsubscribe_list, unsubscribe_webhook, created_at"
)


async def upsert_campaign(
    conn: asyncpg.Connection,
    campaign_id: int,
    *,
    name: str | None = None,
    tracking: bool | None = None,
    recipients: int | None = None,
    tracking_url: str | None = None,
    count_everything: bool | None = None,
    decoy_link: bool | None = None,
    anonymous: bool | None = None,
    full_client_ips: bool | None = None,
    unsubscribe_list: str | None = None,
    unsubscribe_webhook: str | None = None,
) -> tuple[dict[str, Any], list[endpoints.Endpoint]]:
    """Create or update a campaign; None leaves a field as it is, and "" clears tracking_url,
    unsubscribe_list or unsubscribe_webhook. Returns the campaign and the webhook endpoint made when
    unsubscribe_webhook names a URL the first time (its secret is shown once, by the caller)."""
    async with conn.transaction():
        row = await conn.fetchrow(
            f"""INSERT INTO campaigns AS c (campaign_id, name, tracking, recipients, tracking_url, count_everything,
                                            decoy_link, anonymous, full_client_ips, unsubscribe_list,
                                            unsubscribe_webhook)
               VALUES ($1, coalesce($2, ''), coalesce($3, true), coalesce($4, 0), nullif($5, ''),
                       coalesce($6, false), coalesce($7, false), coalesce($8, false), coalesce($9, false),
                       nullif($10, ''), nullif($11, ''))
               ON CONFLICT (campaign_id) DO UPDATE SET
                   name = coalesce($2, c.name), tracking = coalesce($3, c.tracking),
                   recipients = coalesce($4, c.recipients),
                   tracking_url = CASE WHEN $5::text IS NULL THEN c.tracking_url ELSE nullif($5, '') END,
                   count_everything = coalesce($6, c.count_everything), decoy_link = coalesce($7, c.decoy_link),
                   anonymous = coalesce($8, c.anonymous), full_client_ips = coalesce($9, c.full_client_ips),
                   unsubscribe_list = CASE WHEN $10::text IS NULL THEN c.unsubscribe_list ELSE nullif($10, '') END,
                   unsubscribe_webhook
                       = CASE WHEN $11::text IS NULL THEN c.unsubscribe_webhook ELSE nullif($11, '') END
               RETURNING {_CAMPAIGN_COLUMNS}""",  # noqa: S608 - constant column names
            campaign_id,
            name,
            tracking,
            recipients,
            tracking_url,
            count_everything,
            decoy_link,
            anonymous,
            full_client_ips,
            unsubscribe_list,
            unsubscribe_webhook,
        )
        assert row is not None
        made = await endpoints.create_missing(conn, [unsubscribe_webhook] if unsubscribe_webhook else [])
    return _campaign(row), made


async def get_campaign(conn: asyncpg.Connection, campaign_id: int) -> dict[str, Any]:
    row = await conn.fetchrow(
        f"SELECT {_CAMPAIGN_COLUMNS} FROM campaigns WHERE campaign_id = $1",  # noqa: S608 - constant column names
        campaign_id,
    )
    if row is None:
        raise NotFound(f"campaign {campaign_id} does not exist")
    return _campaign(row)


def _campaign(row: asyncpg.Record) -> dict[str, Any]:
    return {
        "id": row["campaign_id"],
        "name": row["name"],
        "tracking": row["tracking"],
        "recipients": row["recipients"],
        "tracking_url": row["tracking_url"],
        "count_everything": row["count_everything"],
        "decoy_link": row["decoy_link"],
        "anonymous": row["anonymous"],
        "full_client_ips": row["full_client_ips"],
        "unsubscribe_list": row["unsubscribe_list"],
        "unsubscribe_webhook": row["unsubscribe_webhook"],
        "created_at": row["created_at"].isoformat(),
    }


@dataclass(frozen=True, slots=True)
class SendingSettings:
    """What rewriting needs of a campaign."""

    tracking: bool
    tracking_url: str | None  # the base URL of its links; None: the default
    decoy_link: bool


async def ensure_campaign(conn: asyncpg.Connection, campaign_id: int) -> SendingSettings:
    """Create the campaign (tracking on) if it does not exist; return what rewriting needs of it."""
    row = await conn.fetchrow(
        """WITH new AS (INSERT INTO campaigns (campaign_id) VALUES ($1) ON CONFLICT DO NOTHING
                        RETURNING tracking, tracking_url, decoy_link)
           SELECT tracking, tracking_url, decoy_link FROM new
           UNION ALL SELECT tracking, tracking_url, decoy_link FROM campaigns WHERE campaign_id = $1 LIMIT 1""",
        campaign_id,
    )
    assert row is not None
    return SendingSettings(row["tracking"], row["tracking_url"], row["decoy_link"])


async def register_links(conn: asyncpg.Connection, campaign_id: int, links: Sequence[LinkSlot]) -> None:
    """Register a campaign's link placements, once per campaign (idempotent). A placement already
    registered for another destination is a conflict: the campaign's message changed under it."""
    if not links:
        return
    rows = await conn.fetch(
        """INSERT INTO links AS l (campaign_id, link_id, destination, placement, name, decoy)
           SELECT $1, id, dest, id, name, decoy
           FROM unnest($2::bigint[], $3::text[], $4::text[], $5::boolean[]) AS x(id, dest, name, decoy)
           ON CONFLICT (campaign_id, link_id) DO UPDATE SET destination = l.destination
           RETURNING link_id, destination""",
        campaign_id,
        [s.link_id for s in links],
        [s.destination for s in links],
        [s.name for s in links],
        [s.part == "decoy" for s in links],
    )
    registered = {r["link_id"]: r["destination"] for r in rows}
    for slot in links:
        if registered.get(slot.link_id) != slot.destination:
            raise Conflict(
                f"campaign {campaign_id} link {slot.link_id} is registered for {registered.get(slot.link_id)!r}, "
                f"not {slot.destination!r}: a campaign's message cannot change once sent; use a new campaign id"
            )


async def record_recipient(conn: asyncpg.Connection, campaign_id: int, contact_id: int) -> None:
    """Count a recipient once, however often their message is rewritten."""
    await conn.execute(
        """WITH new AS (INSERT INTO campaign_recipients (campaign_id, contact_id) VALUES ($1, $2)
                        ON CONFLICT DO NOTHING RETURNING campaign_id)
           UPDATE campaigns SET recipients = recipients + 1 WHERE campaign_id IN (SELECT campaign_id FROM new)""",
        campaign_id,
        contact_id,
    )


async def list_links(conn: asyncpg.Connection, campaign_id: int) -> list[dict[str, Any]]:
    rows = await conn.fetch(
        """SELECT link_id, destination, placement, name, actions, actions_on, decoy FROM links
           WHERE campaign_id = $1 ORDER BY link_id""",
        campaign_id,
    )
    return [
        {
            "id": r["link_id"],
            "destination": r["destination"],
            "placement": r["placement"],
            "name": r["name"],
            "actions": orjson.loads(r["actions"]),
            "actions_on": r["actions_on"],
            "decoy": r["decoy"],
        }
        for r in rows
    ]


# Whose first click fires a link's actions: a person's (the default), or any click (for links only machines
# are meant to fetch).
ACTIONS_ON = ("human", "every_click")


async def set_actions(
    conn: asyncpg.Connection,
    campaign_id: int,
    link_id: int,
    new_actions: Any,
    actor: str,
    *,
    allow_networks: Networks | None = None,
    on: str | None = None,
) -> tuple[list[dict[str, str]], list[endpoints.Endpoint]]:
    """Replace a link's actions and record the change (who, when, before, after) in one transaction;
    return the actions stored and the webhook endpoints made for URLs named the first time (whose
    secrets the caller shows, once). ``allow_networks``: see actions.validate. ``on``: whose clicks fire them,
    ``human`` or ``every_click`` (None leaves it as it is)."""
    clean = actions.validate(new_actions, allow_networks)
    if on is not None and on not in ACTIONS_ON:
        raise actions.ActionError(f"on must be one of {', '.join(ACTIONS_ON)}")
    async with conn.transaction():
        before = await conn.fetchval(
            "SELECT actions FROM links WHERE campaign_id = $1 AND link_id = $2 FOR UPDATE",
            campaign_id,
            link_id,
        )
        if before is None:
            raise NotFound(f"campaign {campaign_id} has no link {link_id}")
        after = orjson.dumps(clean).decode()
        await conn.execute(
            """UPDATE links SET actions = $3, actions_on = coalesce($4, actions_on)
               WHERE campaign_id = $1 AND link_id = $2""",
            campaign_id,
            link_id,
            after,
            on,
        )
        await conn.execute(
            "INSERT INTO link_action_audit (campaign_id, link_id, actor, before, after) VALUES ($1, $2, $3, $4, $5)",
            campaign_id,
            link_id,
            actor,
            before,
            after,
        )
        made = await endpoints.create_missing(conn, [a["url"] for a in clean if a["type"] == "webhook"])
    return clean, made


async def actions_on(conn: asyncpg.Connection, campaign_id: int, link_id: int) -> str:
    """Whose first click fires the link's actions: human or every_click."""
    on: str | None = await conn.fetchval(
        "SELECT actions_on FROM links WHERE campaign_id = $1 AND link_id = $2", campaign_id, link_id
    )
    if on is None:
        raise NotFound(f"campaign {campaign_id} has no link {link_id}")
    return on


async def action_audit(conn: asyncpg.Connection, campaign_id: int, link_id: int) -> list[dict[str, Any]]:
    rows = await conn.fetch(
        """SELECT actor, changed_at, before, after FROM link_action_audit
           WHERE campaign_id = $1 AND link_id = $2 ORDER BY id""",
        campaign_id,
        link_id,
    )
    return [
        {
            "actor": r["actor"],
            "at": r["changed_at"].isoformat(),
            "before": orjson.loads(r["before"]),
            "after": orjson.loads(r["after"]),
        }
        for r in rows
    ]
