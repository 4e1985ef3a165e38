"""Link actions: what a contact's first qualifying click on a link does.

An action is a JSON object with a ``type`` and its one argument:

    {"type": "add_tag", "tag": "pricing"}          {"type": "remove_tag", "tag": "cold"}
    {"type": "start_automation", "automation": "trial-nurture"}
    {"type": "end_automation", "automation": "win-back"}
    {"type": "subscribe", "list": "product-news"}  {"type": "unsubscribe", "list": "weekly"}
    {"type": "webhook", "url": "https://crm.example.com/hooks/click"}

``validate`` checks a list of them (for the admin API and the CLI); ``apply`` carries them out for newly
applied first clicks, inside the ingest transaction, one statement per action type.
"""

from __future__ import annotations

import ipaddress
import uuid
from collections import defaultdict
from datetime import datetime
from typing import Any
from urllib.parse import urlsplit

import asyncpg
import orjson

from collector.destinations import ALLOW_SETTING, Networks, refusal, userinfo_problem

MAX_ACTIONS = 20
MAX_NAME = 200
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
        if not isinstance(value, str) or not value.strip() or len(value) > MAX_NAME * 10:
            raise ActionError(f"actions[{i}].{arg} must be a non-empty string")
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
        elif len(value) > MAX_NAME:
            raise ActionError(f"actions[{i}].{arg} must be at most {MAX_NAME} characters")
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


async def apply(conn: asyncpg.Connection, applied: list[dict[str, Any]]) -> None:
    """Carry out the actions of each newly applied (campaign, link, contact) first click.

    Clicks are taken in time order and each link's actions in their listed order; what that sequence
    does to each (contact, tag), (contact, list) and (contact, automation) is worked out here, so each
    key is written once, with one statement per kind of change. The kinds touch different tables, so
    writing them grouped by kind leaves the state that running the actions one by one, each as its own
    statement, would leave; tests/collector/test_actions.py checks that against such a run. Webhooks
    only go to the outbox here: their deliveries are concurrent and at least once, in no set order.
    """
    keys = sorted({(a["campaign_id"], a["link_id"]) for a in applied})
    rows = await conn.fetch(
        """SELECT l.campaign_id, l.link_id, l.name, l.destination, l.actions, c.name AS campaign
           FROM links l JOIN campaigns c USING (campaign_id)
           WHERE (l.campaign_id, l.link_id) IN (SELECT * FROM unnest($1::bigint[], $2::bigint[]))""",
        [k[0] for k in keys],
        [k[1] for k in keys],
    )
    links = {(r["campaign_id"], r["link_id"]): r for r in rows}
    # Final state: present?, since when, and whether a remove_tag came first (then the tag's added_at is
    # this batch's, even if the contact had the tag before; an add_tag alone keeps an existing tag's).
    tags: dict[tuple[int, str], tuple[bool, datetime, bool]] = {}
    lists: dict[tuple[int, str], tuple[bool, datetime]] = {}
    close_open_runs: dict[tuple[int, str], datetime] = {}  # runs open before this batch: ended at
    new_runs: dict[tuple[int, str], list[list[Any]]] = defaultdict(list)  # [started_at, ended_at]
    webhooks: list[tuple[uuid.UUID, str, str]] = []
    timeline: list[tuple[Any, ...]] = []
    for click in sorted(applied, key=lambda a: (a["clicked_at"], a["event_id"])):
        link = links.get((click["campaign_id"], click["link_id"]))
        if link is None:
            continue
        at = datetime.fromisoformat(click["clicked_at"])
        event_id = uuid.UUID(click["event_id"])
        contact = click["contact_id"]
        for index, action in enumerate(orjson.loads(link["actions"])):
            kind = action["type"]
            value = action[ARGUMENT[kind]]
            key = (contact, value)
            timeline.append(
                (contact, at, click["campaign_id"], click["link_id"], event_id, orjson.dumps(action).decode(), index)
            )
            if kind == "add_tag":
                present, since, replaced = tags.get(key, (False, at, False))
                tags[key] = (True, since if present else at, replaced)  # a second add_tag changes nothing
            elif kind == "remove_tag":
                tags[key] = (False, at, True)
            elif kind in ("subscribe", "unsubscribe"):
                lists[key] = (kind == "subscribe", at)
            elif kind == "start_automation":
                new_runs[key].append([at, None])
            elif kind == "end_automation":
                close_open_runs.setdefault(key, at)  # runs open before this batch end at the first end
                for run in new_runs.get(key, []):
                    if run[1] is None:
                        run[1] = at
            else:
                idempotency_key = uuid.uuid5(WEBHOOK_NAMESPACE, f"{event_id}:{index}")
                body = {
                    "type": "link.first_click",
                    "idempotency_key": str(idempotency_key),
                    "campaign": {"id": click["campaign_id"], "name": link["campaign"]},
                    "link": {"id": click["link_id"], "name": link["name"], "destination": link["destination"]},
                    "contact_id": contact,
                    "event_id": str(event_id),
                    "clicked_at": at.isoformat(),
                }
                webhooks.append((idempotency_key, value, orjson.dumps(body).decode()))
    added = [(c, t, at) for (c, t), (present, at, replaced) in sorted(tags.items()) if present and not replaced]
    readded = [(c, t, at) for (c, t), (present, at, replaced) in sorted(tags.items()) if present and replaced]
    removed = [(c, t) for (c, t), (present, _, _) in sorted(tags.items()) if not present]
    if added:
        await conn.execute(
            "INSERT INTO contact_tags (contact_id, tag, added_at) SELECT * FROM "
            "unnest($1::bigint[], $2::text[], $3::timestamptz[]) ON CONFLICT DO NOTHING",
            *_columns(added),
        )
    if readded:
        await conn.execute(
            "INSERT INTO contact_tags (contact_id, tag, added_at) SELECT * FROM "
            "unnest($1::bigint[], $2::text[], $3::timestamptz[]) ON CONFLICT (contact_id, tag) "
            "DO UPDATE SET added_at = EXCLUDED.added_at",
            *_columns(readded),
        )
    if removed:
        await conn.execute(
            "DELETE FROM contact_tags t USING unnest($1::bigint[], $2::text[]) AS x(contact_id, tag) "
            "WHERE t.contact_id = x.contact_id AND t.tag = x.tag",
            *_columns(removed),
        )
    if lists:
        await conn.execute(
            "INSERT INTO list_memberships AS m (contact_id, list, subscribed, changed_at) SELECT * FROM "
            "unnest($1::bigint[], $2::text[], $3::boolean[], $4::timestamptz[]) ON CONFLICT (contact_id, list) "
            "DO UPDATE SET subscribed = EXCLUDED.subscribed, changed_at = EXCLUDED.changed_at",
            *_columns([(c, name, on, at) for (c, name), (on, at) in sorted(lists.items())]),
        )
    if close_open_runs:
        await conn.execute(
            "UPDATE automation_runs r SET ended_at = x.at FROM unnest($1::bigint[], $2::text[], $3::timestamptz[]) "
            "AS x(contact_id, automation, at) WHERE r.contact_id = x.contact_id AND r.automation = x.automation "
            "AND r.ended_at IS NULL",
            *_columns([(c, name, at) for (c, name), at in sorted(close_open_runs.items())]),
        )
    runs = [(c, name, start, end) for (c, name), items in sorted(new_runs.items()) for start, end in items]
    if runs:
        await conn.execute(
            "INSERT INTO automation_runs (contact_id, automation, started_at, ended_at) SELECT * FROM "
            "unnest($1::bigint[], $2::text[], $3::timestamptz[], $4::timestamptz[]) ON CONFLICT DO NOTHING",
            *_columns(runs),
        )
    if webhooks:
        await conn.execute(
            "INSERT INTO webhook_outbox (idempotency_key, url, body) SELECT * FROM "
            "unnest($1::uuid[], $2::text[], $3::jsonb[]) ON CONFLICT (idempotency_key) DO NOTHING",
            *_columns(webhooks),
        )
    if timeline:
        await conn.execute(
            "INSERT INTO contact_events (contact_id, at, campaign_id, link_id, event_id, action, position) "
            "SELECT * FROM unnest($1::bigint[], $2::timestamptz[], $3::bigint[], $4::bigint[], "
            "$5::uuid[], $6::jsonb[], $7::integer[])",
            *_columns(timeline),
        )


def _columns(rows: list[tuple[Any, ...]]) -> list[list[Any]]:
    return [list(column) for column in zip(*rows, strict=True)]
