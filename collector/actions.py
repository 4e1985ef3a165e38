"""Link actions: what a contact's first qualifying click on a link does.

An action is a JSON object with a ``type`` and its one argument:

    {"type": "add_tag", "tag": "pricing"}          {"type": "remove_tag", "tag": "cold"}
    {"type": "start_automation", "automation": "trial-nurture"}
    {"type": "end_automation", "automation": "win-back"}
    {"type": "subscribe", "list": "product-news"}  {"type": "unsubscribe", "list": "weekly"}
    {"type": "webhook", "url": "https://crm.example.com/hooks/click"}

``validate`` checks a list of them (for the admin API and the CLI). ``apply`` carries them out for newly
applied first clicks, inside the ingest transaction, in two parts: ``plan``, a pure function, works out
what the clicks' actions do, and ``write`` writes that plan with one statement per kind of change.
"""

from __future__ import annotations

import ipaddress
import uuid
from collections import defaultdict
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, fields
from datetime import datetime
from typing import Any
from urllib.parse import urlsplit

import asyncpg
import orjson

from collector.destinations import ALLOW_SETTING, Networks, refusal, userinfo_problem

MAX_ACTIONS = 20
MAX_NAME = 200  # a tag, automation or list
MAX_URL = 2000  # a webhook's URL
ARGUMENT = {
    "add_tag": "tag",
    "remove_tag": "tag",
    "start_automation": "automation",
    "end_automation": "automation",
    "subscribe": "list",
    "unsubscribe": "list",
    "webhook": "url",
}
WEBHOOK_NAMESPACE = uuid.UUID("5b2f3d3e-6c1e-4c55-9a57-2f8f4f1f0c11")


class ActionError(ValueError):
    """An action list that cannot be stored; the message names the item and what is wrong."""


def validate(actions: Any, allow: Networks | None = None) -> list[dict[str, str]]:
    """The actions, checked; an ActionError names the first problem. With ``allow`` (the admin API), a
    webhook to an IP literal the destination policy refuses is refused here already; the deliverer checks
    every address again when it connects, names included."""
    if not isinstance(actions, list):
        raise ActionError("actions must be a JSON array")
    if len(actions) > MAX_ACTIONS:
        raise ActionError(f"at most {MAX_ACTIONS} actions per link")
    clean: list[dict[str, str]] = []
    for i, action in enumerate(actions):
        if not isinstance(action, dict):
            raise ActionError(f"actions[{i}] must be an object")
        kind = action.get("type")
        if kind not in ARGUMENT:
            raise ActionError(f"actions[{i}].type must be one of {', '.join(ARGUMENT)}")
        arg = ARGUMENT[kind]
        value = action.get(arg)
        if not isinstance(value, str) or not value.strip():
            raise ActionError(f"actions[{i}].{arg} must be a non-empty string")
        limit = MAX_URL if kind == "webhook" else MAX_NAME
        if len(value) > limit:  # before anything parses it
            raise ActionError(f"actions[{i}].{arg} must be at most {limit} characters")
        if "\x00" in value:
            raise ActionError(f"actions[{i}].{arg} must not contain a NUL character")
        if set(action) != {"type", arg}:
            extra = sorted(set(action) - {"type", arg})
            raise ActionError(f"actions[{i}] has unknown fields: {', '.join(extra)}")
        if kind == "webhook":
            try:
                parts = urlsplit(value)
                host = parts.hostname or ""
                host.encode("idna")  # what the HTTP client will need to do with it
                parts.port  # noqa: B018 - raises ValueError on a port that is not a number
            except (ValueError, UnicodeError):
                raise ActionError(f"actions[{i}].url is not a valid URL") from None
            if parts.scheme not in ("http", "https") or not host or any(c.isspace() for c in value):
                raise ActionError(f"actions[{i}].url must be an absolute http(s) URL")
            problem = userinfo_problem(value)
            if problem is not None:
                raise ActionError(f"actions[{i}].url {problem}")
            if allow is not None:
                _check_destination(i, host, allow)
        entry = {"type": kind, arg: value}
        if entry in clean:
            raise ActionError(f"actions[{i}] repeats actions[{clean.index(entry)}]")
        clean.append(entry)
    return clean


def _check_destination(index: int, host: str, allow: Networks) -> None:
    try:
        ipaddress.ip_address(host)
    except ValueError:
        return  # a name: what it resolves to is checked at each delivery
    reason = refusal(host, allow)
    if reason is not None:
        raise ActionError(
            f"actions[{index}].url is refused: {reason}; webhooks go to public addresses unless "
            f"the collector's {ALLOW_SETTING} opens the range"
        )


# What ingest hands over and what planning reads: the clicks whose actions are due, and each link's actions.


@dataclass(frozen=True, slots=True)
class AppliedClick:
    """A contact's first qualifying click on a link with actions (ingest's ``applied`` rows)."""

    campaign_id: int
    link_id: int
    contact_id: int
    event_id: uuid.UUID
    clicked_at: datetime


@dataclass(frozen=True, slots=True)
class LinkActions:
    """A link's actions in their listed order, with the names a webhook's body carries."""

    campaign: str
    name: str
    destination: str
    actions: tuple[dict[str, str], ...]


# What planning produces: the rows to write, each kind in the order of its statement's columns.


@dataclass(frozen=True, slots=True)
class TagAdd:
    contact_id: int
    tag: str
    added_at: datetime


@dataclass(frozen=True, slots=True)
class TagRemove:
    contact_id: int
    tag: str


@dataclass(frozen=True, slots=True)
class ListState:
    contact_id: int
    list: str
    subscribed: bool
    changed_at: datetime


@dataclass(frozen=True, slots=True)
class RunEnd:
    """Ends a contact's runs of an automation that were open before this batch."""

    contact_id: int
    automation: str
    ended_at: datetime


@dataclass(frozen=True, slots=True)
class Run:
    """A run started in this batch; ``ended_at`` is set when a later action of the batch ended it."""

    contact_id: int
    automation: str
    started_at: datetime
    ended_at: datetime | None


@dataclass(frozen=True, slots=True)
class Webhook:
    idempotency_key: uuid.UUID
    url: str
    body: str  # JSON


@dataclass(frozen=True, slots=True)
class TimelineEntry:
    contact_id: int
    at: datetime
    campaign_id: int
    link_id: int
    event_id: uuid.UUID
    action: str  # JSON
    position: int  # the action's place in its link's list


@dataclass(frozen=True, slots=True)
class Plan:
    """Everything one batch's first clicks do, worked out before anything is written: each (contact, tag)
    and (contact, list) once, in its final state; rows sorted by contact and name."""

    tags_added: tuple[TagAdd, ...] = ()  # a tag the contact already has keeps its added_at
    tags_readded: tuple[TagAdd, ...] = ()  # removed, then added again in this batch: added_at is this batch's
    tags_removed: tuple[TagRemove, ...] = ()
    lists: tuple[ListState, ...] = ()
    runs_ended: tuple[RunEnd, ...] = ()
    runs: tuple[Run, ...] = ()
    webhooks: tuple[Webhook, ...] = ()  # in click order, then each link's listed order
    timeline: tuple[TimelineEntry, ...] = ()  # likewise


class _Accumulator:
    """The running state of one batch's actions, taken one at a time in the order they run."""

    def __init__(self) -> None:
        # (present, since, replaced): replaced when a remove_tag came first, so the tag's added_at is this
        # batch's even if the contact had the tag before (an add_tag alone keeps an existing tag's).
        self.tags: dict[tuple[int, str], tuple[bool, datetime, bool]] = {}
        self.lists: dict[tuple[int, str], tuple[bool, datetime]] = {}
        self.runs_ended: dict[tuple[int, str], datetime] = {}  # runs open before this batch: ended at
        self.runs: dict[tuple[int, str], list[tuple[datetime, datetime | None]]] = defaultdict(list)
        self.webhooks: list[Webhook] = []
        self.timeline: list[TimelineEntry] = []

    def add(self, click: AppliedClick, link: LinkActions, position: int, action: dict[str, str]) -> None:
        kind = action["type"]
        value = action[ARGUMENT[kind]]
        key = (click.contact_id, value)
        at = click.clicked_at
        self.timeline.append(
            TimelineEntry(
                click.contact_id,
                at,
                click.campaign_id,
                click.link_id,
                click.event_id,
                orjson.dumps(action).decode(),
                position,
            )
        )
        if kind == "add_tag":
            present, since, replaced = self.tags.get(key, (False, at, False))
            self.tags[key] = (True, since if present else at, replaced)  # a second add_tag changes nothing
        elif kind == "remove_tag":
            self.tags[key] = (False, at, True)
        elif kind in ("subscribe", "unsubscribe"):
            self.lists[key] = (kind == "subscribe", at)
        elif kind == "start_automation":
            self.runs[key].append((at, None))
        elif kind == "end_automation":
            self.runs_ended.setdefault(key, at)  # runs open before this batch end at the first end
            self.runs[key] = [(start, at if end is None else end) for start, end in self.runs.get(key, [])]
        else:
            self.webhooks.append(_webhook(click, link, position, value))

    def plan(self) -> Plan:
        tags = sorted(self.tags.items())
        return Plan(
            tags_added=tuple(TagAdd(c, t, at) for (c, t), (present, at, replaced) in tags if present and not replaced),
            tags_readded=tuple(TagAdd(c, t, at) for (c, t), (present, at, replaced) in tags if present and replaced),
            tags_removed=tuple(TagRemove(c, t) for (c, t), (present, _, _) in tags if not present),
            lists=tuple(ListState(c, name, on, at) for (c, name), (on, at) in sorted(self.lists.items())),
            runs_ended=tuple(RunEnd(c, name, at) for (c, name), at in sorted(self.runs_ended.items())),
            runs=tuple(
                Run(c, name, start, end) for (c, name), runs in sorted(self.runs.items()) for start, end in runs
            ),
            webhooks=tuple(self.webhooks),
            timeline=tuple(self.timeline),
        )


def _webhook(click: AppliedClick, link: LinkActions, position: int, url: str) -> Webhook:
    # The key is the same whichever collector plans it, and however often: the outbox keeps one row per key.
    idempotency_key = uuid.uuid5(WEBHOOK_NAMESPACE, f"{click.event_id}:{position}")
    body = {
        "type": "link.first_click",
        "idempotency_key": str(idempotency_key),
        "campaign": {"id": click.campaign_id, "name": link.campaign},
        "link": {"id": click.link_id, "name": link.name, "destination": link.destination},
        "contact_id": click.contact_id,
        "event_id": str(click.event_id),
        "clicked_at": click.clicked_at.isoformat(),
    }
    return Webhook(idempotency_key, url, orjson.dumps(body).decode())


def plan(clicks: Iterable[AppliedClick], links: Mapping[tuple[int, int], LinkActions]) -> Plan:
    """What the actions of these first clicks do, as rows to write; pure.

    Clicks are taken in time order (event id breaking ties) and each link's actions in their listed order;
    what that sequence does to each (contact, tag), (contact, list) and (contact, automation) is worked out
    here, so that ``write`` writes each key once, with one statement per kind of change. A click whose link
    is not in ``links`` does nothing.
    """
    batch = _Accumulator()
    for click in sorted(clicks, key=lambda c: (c.clicked_at, c.event_id)):
        link = links.get((click.campaign_id, click.link_id))
        if link is None:
            continue
        for position, action in enumerate(link.actions):
            batch.add(click, link, position, action)
    return batch.plan()


# One statement per kind of change. The kinds touch different tables, so writing them grouped by kind leaves
# the state that running the actions one by one, each as its own statement, would leave
# (tests/collector/test_actions.py checks that against such a run). Runs open before the batch are ended
# before this batch's runs are inserted, so that only the older ones are ended by that statement.
ADD_TAGS = """INSERT INTO contact_tags (contact_id, tag, added_at)
SELECT * FROM unnest($1::bigint[], $2::text[], $3::timestamptz[]) ON CONFLICT DO NOTHING"""
READD_TAGS = """INSERT INTO contact_tags (contact_id, tag, added_at)
SELECT * FROM unnest($1::bigint[], $2::text[], $3::timestamptz[])
ON CONFLICT (contact_id, tag) DO UPDATE SET added_at = EXCLUDED.added_at"""
REMOVE_TAGS = """DELETE FROM contact_tags t USING unnest($1::bigint[], $2::text[]) AS x(contact_id, tag)
WHERE t.contact_id = x.contact_id AND t.tag = x.tag"""
SET_LISTS = """INSERT INTO list_memberships AS m (contact_id, list, subscribed, changed_at)
SELECT * FROM unnest($1::bigint[], $2::text[], $3::boolean[], $4::timestamptz[])
ON CONFLICT (contact_id, list) DO UPDATE SET subscribed = EXCLUDED.subscribed, changed_at = EXCLUDED.changed_at"""
END_RUNS = """UPDATE automation_runs r SET ended_at = x.at
FROM unnest($1::bigint[], $2::text[], $3::timestamptz[]) AS x(contact_id, automation, at)
WHERE r.contact_id = x.contact_id AND r.automation = x.automation AND r.ended_at IS NULL"""
START_RUNS = """INSERT INTO automation_runs (contact_id, automation, started_at, ended_at)
SELECT * FROM unnest($1::bigint[], $2::text[], $3::timestamptz[], $4::timestamptz[]) ON CONFLICT DO NOTHING"""
QUEUE_WEBHOOKS = """INSERT INTO webhook_outbox (idempotency_key, url, body)
SELECT * FROM unnest($1::uuid[], $2::text[], $3::jsonb[]) ON CONFLICT (idempotency_key) DO NOTHING"""
RECORD_TIMELINE = """INSERT INTO contact_events (contact_id, at, campaign_id, link_id, event_id, action, position)
SELECT * FROM unnest($1::bigint[], $2::timestamptz[], $3::bigint[], $4::bigint[], $5::uuid[], $6::jsonb[],
                     $7::integer[])"""


async def write(conn: asyncpg.Connection, plan: Plan) -> None:
    """Write a plan: one statement per kind of change that has rows, in the caller's transaction."""
    steps: tuple[tuple[str, Sequence[Any]], ...] = (
        (ADD_TAGS, plan.tags_added),
        (READD_TAGS, plan.tags_readded),
        (REMOVE_TAGS, plan.tags_removed),
        (SET_LISTS, plan.lists),
        (END_RUNS, plan.runs_ended),
        (START_RUNS, plan.runs),
        (QUEUE_WEBHOOKS, plan.webhooks),
        (RECORD_TIMELINE, plan.timeline),
    )
    for statement, rows in steps:
        if rows:
            await conn.execute(statement, *_columns(rows))


def _columns(rows: Sequence[Any]) -> list[list[Any]]:
    """Dataclass rows as one list per field, in field order: the arrays the unnest statements take."""
    return [[getattr(row, f.name) for row in rows] for f in fields(rows[0])]


LINKS = """
SELECT l.campaign_id, l.link_id, l.name, l.destination, l.actions, c.name AS campaign
FROM links l JOIN campaigns c USING (campaign_id)
WHERE (l.campaign_id, l.link_id) IN (SELECT * FROM unnest($1::bigint[], $2::bigint[]))
"""


async def links_of(conn: asyncpg.Connection, clicks: Sequence[AppliedClick]) -> dict[tuple[int, int], LinkActions]:
    keys = sorted({(c.campaign_id, c.link_id) for c in clicks})
    rows = await conn.fetch(LINKS, [k[0] for k in keys], [k[1] for k in keys])
    return {
        (r["campaign_id"], r["link_id"]): LinkActions(
            r["campaign"], r["name"], r["destination"], tuple(orjson.loads(r["actions"]))
        )
        for r in rows
    }


async def apply(conn: asyncpg.Connection, clicks: Sequence[AppliedClick]) -> None:
    """Carry out the actions of newly applied first clicks, inside the ingest transaction. Webhooks only go
    to the outbox here: their deliveries are concurrent and at least once, in no set order."""
    await write(conn, plan(clicks, await links_of(conn, clicks)))
