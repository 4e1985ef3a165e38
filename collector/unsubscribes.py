"""One-click unsubscribes (RFC 8058): what an edge's POST to ``/u/<token>`` does, in the ingest transaction.

An edge records the POST like a click (same spool, same batches: a row with outcome ``unsubscribe``). Here,
exactly once however often a batch is delivered:

- a contact's first unsubscribe with a campaign's messages is kept in ``unsubscribes`` (with the campaign's
  ``unsubscribe_list`` at the time) and counted in ``campaign_stats.unsubscribes``;
- the contact leaves that list (``list_memberships``): unless a later change of the membership is already
  there (a subscribe that came after the POST), so a batch delivered again, however late, never undoes a
  subscription made since. A later POST of the same contact and campaign adds no row and no count, but
  unsubscribes them again if they subscribed since (within one batch, the pair's first does it all);
- each unsubscribe that did something goes on the contact's timeline and sends a ``contact.unsubscribed``
  event to the campaign's ``unsubscribe_webhook``, through the webhook outbox (at least once, signed).

An unsubscribe of an erased contact is dropped: nothing about them is left to change (collector/contacts.py).
``plan`` is pure; ``apply`` reads what it needs and writes the plan.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime

import asyncpg
import orjson

from collector import actions
from collector.actions import WEBHOOK_NAMESPACE, TimelineEntry, Webhook
from common.events import Click

EVENT = "contact.unsubscribed"
VIA = "one_click"
NO_LINK = 0  # an unsubscribe token names no link


@dataclass(frozen=True, slots=True)
class Unsubscribe:
    event_id: uuid.UUID
    campaign_id: int
    contact_id: int
    at: datetime


@dataclass(frozen=True, slots=True)
class Campaign:
    """What an unsubscribe reads of its campaign."""

    name: str
    list: str | None
    webhook: str | None


@dataclass(frozen=True, slots=True)
class Plan:
    firsts: tuple[Unsubscribe, ...]  # to keep in unsubscribes, each (campaign, contact) once, earliest first
    lists: tuple[tuple[int, str, datetime], ...]  # (contact, list, at): the latest unsubscribe of each pair


def from_clicks(clicks: Iterable[Click]) -> list[Unsubscribe]:
    """The unsubscribes among a batch's rows (outcome unsubscribe; each names its contact)."""
    return [
        Unsubscribe(
            uuid.UUID(bytes=c.event_id),
            c.campaign_id,
            c.contact_id,
            datetime.fromtimestamp(c.clicked_at_us / 1e6, UTC),
        )
        for c in clicks
        if c.contact_id is not None
    ]


def plan(unsubscribes: Sequence[Unsubscribe], campaigns: Mapping[int, Campaign]) -> Plan:
    """The rows an unsubscribe batch may write; pure. Which of them change anything, the database says."""
    ordered = sorted(unsubscribes, key=lambda u: (u.at, u.event_id))
    firsts: dict[tuple[int, int], Unsubscribe] = {}
    lists: dict[tuple[int, str], datetime] = {}
    for u in ordered:
        firsts.setdefault((u.campaign_id, u.contact_id), u)
        name = campaigns[u.campaign_id].list if u.campaign_id in campaigns else None
        if name is not None:
            lists[(u.contact_id, name)] = u.at
    return Plan(
        tuple(sorted(firsts.values(), key=lambda u: (u.campaign_id, u.contact_id))),
        tuple((contact, name, at) for (contact, name), at in sorted(lists.items())),
    )


def effects(
    applied: Iterable[Unsubscribe], campaigns: Mapping[int, Campaign]
) -> tuple[list[TimelineEntry], list[Webhook]]:
    """The timeline entries and webhook events of the unsubscribes that did something; pure."""
    timeline: list[TimelineEntry] = []
    webhooks: list[Webhook] = []
    for u in sorted(applied, key=lambda u: (u.at, u.event_id)):
        campaign = campaigns.get(u.campaign_id, Campaign("", None, None))
        action = {"type": "unsubscribe", "list": campaign.list, "via": VIA}
        timeline.append(
            TimelineEntry(u.contact_id, u.at, u.campaign_id, NO_LINK, u.event_id, orjson.dumps(action).decode(), 0)
        )
        if campaign.webhook is not None:
            key = uuid.uuid5(WEBHOOK_NAMESPACE, f"{u.event_id}:unsubscribe")
            body = {
                "type": EVENT,
                "idempotency_key": str(key),
                "campaign": {"id": u.campaign_id, "name": campaign.name},
                "contact_id": u.contact_id,
                "list": campaign.list,
                "event_id": str(u.event_id),
                "unsubscribed_at": u.at.isoformat(),
            }
            webhooks.append(Webhook(key, campaign.webhook, orjson.dumps(body).decode()))
    return timeline, webhooks


CAMPAIGNS = """SELECT campaign_id, name, unsubscribe_list, unsubscribe_webhook FROM campaigns
WHERE campaign_id = ANY($1::bigint[])"""
KEEP_FIRSTS = """INSERT INTO unsubscribes (campaign_id, contact_id, event_id, unsubscribed_at, list)
SELECT * FROM unnest($1::bigint[], $2::bigint[], $3::uuid[], $4::timestamptz[], $5::text[])
ON CONFLICT DO NOTHING
RETURNING event_id"""
COUNT = """INSERT INTO campaign_stats AS s (campaign_id, unsubscribes)
SELECT * FROM unnest($1::bigint[], $2::bigint[])
ON CONFLICT (campaign_id) DO UPDATE SET unsubscribes = s.unsubscribes + EXCLUDED.unsubscribes"""
# Off the list, unless the membership changed after this unsubscribe (or already says unsubscribed).
LEAVE_LISTS = """INSERT INTO list_memberships AS m (contact_id, list, subscribed, changed_at)
SELECT x.contact_id, x.list, false, x.at
FROM unnest($1::bigint[], $2::text[], $3::timestamptz[]) AS x(contact_id, list, at)
ON CONFLICT (contact_id, list) DO UPDATE SET subscribed = false, changed_at = EXCLUDED.changed_at
WHERE m.subscribed AND m.changed_at < EXCLUDED.changed_at
RETURNING contact_id, list"""


async def apply(conn: asyncpg.Connection, unsubscribes: Sequence[Unsubscribe]) -> int:
    """Record a batch's unsubscribes and carry them out, in the caller's transaction. Returns how many did
    something (their webhook events, if any, wait in the outbox)."""
    if not unsubscribes:
        return 0
    rows = await conn.fetch(CAMPAIGNS, sorted({u.campaign_id for u in unsubscribes}))
    campaigns = {r["campaign_id"]: Campaign(r["name"], r["unsubscribe_list"], r["unsubscribe_webhook"]) for r in rows}
    todo = plan(unsubscribes, campaigns)
    kept = await conn.fetch(
        KEEP_FIRSTS,
        [u.campaign_id for u in todo.firsts],
        [u.contact_id for u in todo.firsts],
        [u.event_id for u in todo.firsts],
        [u.at for u in todo.firsts],
        [campaigns[u.campaign_id].list if u.campaign_id in campaigns else None for u in todo.firsts],
    )
    kept_ids = {r["event_id"] for r in kept}
    firsts = [u for u in todo.firsts if u.event_id in kept_ids]
    per_campaign: dict[int, int] = {}
    for u in firsts:
        per_campaign[u.campaign_id] = per_campaign.get(u.campaign_id, 0) + 1
    if per_campaign:
        await conn.execute(COUNT, list(per_campaign), list(per_campaign.values()))
    changed: set[tuple[int, str]] = set()
    if todo.lists:
        left = await conn.fetch(LEAVE_LISTS, *(list(column) for column in zip(*todo.lists, strict=True)))
        changed = {(r["contact_id"], r["list"]) for r in left}

    # Each unsubscribe that did something: the first of its pair, or else the latest of a pair that left a
    # list. One entry for a list a contact left however many of the batch's unsubscribes asked for it.
    def list_of(u: Unsubscribe) -> str | None:
        return campaigns[u.campaign_id].list if u.campaign_id in campaigns else None

    latest = {(contact, name): at for contact, name, at in todo.lists}
    applied = {u.event_id: u for u in firsts}
    changed -= {(u.contact_id, name) for u in firsts if (name := list_of(u)) is not None}
    for u in sorted(unsubscribes, key=lambda u: (u.at, u.event_id)):
        name = list_of(u)
        if name is not None and (u.contact_id, name) in changed and latest[(u.contact_id, name)] == u.at:
            applied.setdefault(u.event_id, u)
            changed.discard((u.contact_id, name))
    timeline, webhooks = effects(applied.values(), campaigns)
    await actions.write(conn, actions.Plan(webhooks=tuple(webhooks), timeline=tuple(timeline)))
    return len(applied)
