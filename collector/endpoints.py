"""Webhook endpoints (each URL webhooks go to, with a signing secret of its own) and the delivery status
of a link's webhooks: the admin side of webhooks. asyncpg only.

An endpoint's secret is derived from the master webhook secret, its id and its generation
(common.signing.endpoint_secret), so the database holds none: it is shown once when the endpoint is
made (an action list names its URL for the first time) and when it is rotated, never listed.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import asyncpg

from collector.destinations import scrub, shown
from common.signing import endpoint_secret

COLUMNS = "id, url, generation, created_at, rotated_at"


class NotFound(LookupError):
    pass


@dataclass(frozen=True, slots=True)
class Endpoint:
    id: int
    url: str
    generation: int
    created_at: datetime
    rotated_at: datetime | None

    def secret(self, master: bytes) -> str:
        return endpoint_secret(master, self.id, self.generation)

    def public(self) -> dict[str, Any]:
        """What a read key may see: no secret, and the URL without user name and password."""
        return {
            "id": self.id,
            "url": shown(self.url, query=True),
            "generation": self.generation,
            "created_at": self.created_at.isoformat(),
            "rotated_at": self.rotated_at.isoformat() if self.rotated_at else None,
        }

    def with_secret(self, master: bytes) -> dict[str, Any]:
        return {**self.public(), "secret": self.secret(master)}


def _endpoint(row: asyncpg.Record) -> Endpoint:
    return Endpoint(row["id"], row["url"], row["generation"], row["created_at"], row["rotated_at"])


async def create_missing(conn: asyncpg.Connection, urls: Sequence[str]) -> list[Endpoint]:
    """Make an endpoint for each URL that has none; return the ones made (their secrets are new)."""
    if not urls:
        return []
    rows = await conn.fetch(
        f"""INSERT INTO webhook_endpoints (url) SELECT DISTINCT u FROM unnest($1::text[]) AS u ORDER BY 1
            ON CONFLICT (url) DO NOTHING RETURNING {COLUMNS}""",  # noqa: S608 - constants only
        list(urls),
    )
    return sorted((_endpoint(r) for r in rows), key=lambda e: e.id)


async def for_urls(conn: asyncpg.Connection, urls: Sequence[str]) -> dict[str, Endpoint]:
    """The endpoints of ``urls``, made where missing (a URL set by an older collector during an upgrade,
    or a row written by hand): a delivery is always signed with its own destination's secret."""
    rows = await conn.fetch(
        f"""WITH wanted AS (SELECT DISTINCT unnest($1::text[]) AS url),
                new AS (INSERT INTO webhook_endpoints (url) SELECT url FROM wanted ORDER BY url
                        ON CONFLICT (url) DO NOTHING RETURNING {COLUMNS})
            SELECT {COLUMNS} FROM new
            UNION ALL
            SELECT {COLUMNS} FROM webhook_endpoints JOIN wanted USING (url)""",  # noqa: S608 - constants only
        list(urls),
    )
    return {r["url"]: _endpoint(r) for r in rows}


async def listing(conn: asyncpg.Connection, *, after: int, limit: int) -> tuple[list[Endpoint], int | None]:
    """A page of endpoints by id, and the ``after`` of the next page (None: this is the last)."""
    rows = await conn.fetch(
        f"SELECT {COLUMNS} FROM webhook_endpoints WHERE id > $1 ORDER BY id LIMIT $2",  # noqa: S608
        after,
        limit + 1,  # one more than a page says whether there is a next one
    )
    page = [_endpoint(r) for r in rows[:limit]]
    return page, (page[-1].id if len(rows) > limit else None)


async def rotate(conn: asyncpg.Connection, endpoint_id: int) -> Endpoint:
    """Move an endpoint to its next generation: a new secret, and the old one stops verifying at once."""
    row = await conn.fetchrow(
        f"""UPDATE webhook_endpoints SET generation = generation + 1, rotated_at = now()
            WHERE id = $1 RETURNING {COLUMNS}""",  # noqa: S608 - constants only
        endpoint_id,
    )
    if row is None:
        raise NotFound(f"webhook endpoint {endpoint_id} does not exist")
    return _endpoint(row)


DELIVERIES = """
SELECT o.id, o.idempotency_key, o.url, e.id AS endpoint_id, o.created_at, o.attempts, o.next_attempt_at,
       o.delivered_at, o.failed_at, o.last_error, o.body->>'contact_id' AS contact_id, o.body->>'event_id' AS event_id
FROM webhook_outbox o LEFT JOIN webhook_endpoints e USING (url)
WHERE ((o.body->'campaign'->>'id')::bigint) = $1 AND ((o.body->'link'->>'id')::bigint) = $2 AND o.id > $3
ORDER BY o.id LIMIT $4
"""  # the WHERE repeats webhook_outbox_link's expressions, so the index serves it


async def deliveries(
    conn: asyncpg.Connection, campaign_id: int, link_id: int, *, after: int, limit: int
) -> tuple[list[dict[str, Any]], int | None]:
    """A page of a link's webhook deliveries, oldest first, and the ``after`` of the next page."""
    if not await conn.fetchval(
        "SELECT EXISTS (SELECT 1 FROM links WHERE campaign_id = $1 AND link_id = $2)", campaign_id, link_id
    ):
        raise NotFound(f"campaign {campaign_id} has no link {link_id}")
    rows = await conn.fetch(DELIVERIES, campaign_id, link_id, after, limit + 1)
    page = [_delivery(r) for r in rows[:limit]]
    return page, (page[-1]["id"] if len(rows) > limit else None)


def _delivery(row: asyncpg.Record) -> dict[str, Any]:
    state = "delivered" if row["delivered_at"] else "failed" if row["failed_at"] else "pending"
    error = row["last_error"]
    return {
        "id": row["id"],
        "idempotency_key": str(row["idempotency_key"]),
        "endpoint": row["endpoint_id"],
        "url": shown(row["url"], query=True),
        "contact_id": int(row["contact_id"]) if row["contact_id"] else None,
        "event_id": row["event_id"],
        "state": state,
        "attempts": row["attempts"],
        # Rows written before errors were scrubbed may quote the URL with its credentials.
        "last_error": scrub(error, row["url"]) if error else None,
        "created_at": row["created_at"].isoformat(),
        "next_attempt_at": row["next_attempt_at"].isoformat() if state == "pending" else None,
        "delivered_at": row["delivered_at"].isoformat() if row["delivered_at"] else None,
        "failed_at": row["failed_at"].isoformat() if row["failed_at"] else None,
    }
