"""The kill switch: links that must stop redirecting everywhere at once. asyncpg only.

A block names a campaign, one link of a campaign, or a destination host (that host and every host under
it: blocking ``evil.example`` blocks ``login.evil.example``). Blocks are made and lifted through the admin
API or the command line, each with who, when and why; a lifted block stays in the table, with who lifted
it and when. Edges fetch the active list (``GET /v1/edge/blocklist``, with the ingest secret) every few
seconds with an ETag, keep the last one on disk, and answer a blocked link's request with 410.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from typing import Any

import asyncpg
import orjson

from common.limits import MAX_ID

MAX_REASON = 500
MAX_HOST = 253


class BlockError(ValueError):
    """A block that cannot be made or lifted as asked; the message says why."""


def normalize_host(raw: object) -> str:
    """A destination host as a token carries it: lower case, ASCII (IDNA), without a trailing dot or port."""
    if not isinstance(raw, str) or not raw.strip():
        raise BlockError("destination_host must be a host name, such as phish.example")
    host = raw.strip().rstrip(".").lower()
    try:
        host = host.encode("idna").decode("ascii")
    except UnicodeError as exc:
        raise BlockError(f"destination_host is not a valid host name: {exc}") from None
    if len(host) > MAX_HOST or any(c in host for c in "/:@?#[] \t"):
        raise BlockError("destination_host must be a host name only: no scheme, port, path or spaces")
    return host


def _reason(raw: object) -> str:
    if not isinstance(raw, str) or not raw.strip() or len(raw) > MAX_REASON or "\x00" in raw:
        raise BlockError(f"reason must say why, in 1 to {MAX_REASON} characters")
    return raw.strip()


def _id(name: str, raw: object) -> int | None:
    if raw is None:
        return None
    if type(raw) is not int or not 0 <= raw <= MAX_ID:
        raise BlockError(f"{name} must be a whole number from 0 to {MAX_ID}")
    return raw


@dataclass(frozen=True)
class Target:
    """What a block names: a campaign, a campaign's link, or a destination host."""

    campaign_id: int | None = None
    link_id: int | None = None
    destination_host: str | None = None

    @classmethod
    def parse(cls, campaign_id: object = None, link_id: object = None, destination_host: object = None) -> Target:
        campaign, link = _id("campaign_id", campaign_id), _id("link_id", link_id)
        if destination_host is not None:
            if campaign is not None or link is not None:
                raise BlockError("a block names a campaign (and maybe a link) or a destination host, not both")
            return cls(destination_host=normalize_host(destination_host))
        if campaign is None:
            raise BlockError("a block names campaign_id (and maybe link_id) or destination_host")
        return cls(campaign, link)

    def describe(self) -> str:
        if self.destination_host is not None:
            return f"destination host {self.destination_host}"
        return f"campaign {self.campaign_id}" + (f" link {self.link_id}" if self.link_id is not None else "")


_COLUMNS = "id, campaign_id, link_id, destination_host, reason, blocked_by, blocked_at, unblocked_by, unblocked_at"
_SAME_TARGET = """coalesce(campaign_id, -1) = coalesce($1::bigint, -1)
    AND coalesce(link_id, -1) = coalesce($2::bigint, -1)
    AND coalesce(destination_host, '') = coalesce($3::text, '')"""


async def block(conn: asyncpg.Connection, target: Target, reason: object, actor: str) -> tuple[dict[str, Any], bool]:
    """Block ``target``; (the block, whether it is new). Blocking what is blocked already keeps the first."""
    why = _reason(reason)
    row = await conn.fetchrow(
        f"""INSERT INTO blocks (campaign_id, link_id, destination_host, reason, blocked_by)
            VALUES ($1, $2, $3, $4, $5) ON CONFLICT DO NOTHING RETURNING {_COLUMNS}""",  # noqa: S608 - constants
        target.campaign_id,
        target.link_id,
        target.destination_host,
        why,
        actor,
    )
    if row is not None:
        return _block(row), True
    existing = await conn.fetchrow(
        f"SELECT {_COLUMNS} FROM blocks WHERE unblocked_at IS NULL AND {_SAME_TARGET}",  # noqa: S608 - constants
        target.campaign_id,
        target.link_id,
        target.destination_host,
    )
    assert existing is not None
    return _block(existing), False


async def unblock(conn: asyncpg.Connection, target: Target, actor: str) -> dict[str, Any]:
    """Lift the active block on ``target``, or raise BlockError when there is none."""
    row = await conn.fetchrow(
        f"""UPDATE blocks SET unblocked_by = $4, unblocked_at = now()
            WHERE unblocked_at IS NULL AND {_SAME_TARGET} RETURNING {_COLUMNS}""",  # noqa: S608 - constants
        target.campaign_id,
        target.link_id,
        target.destination_host,
        actor,
    )
    if row is None:
        raise BlockError(f"{target.describe()} is not blocked")
    return _block(row)


async def lift(conn: asyncpg.Connection, block_id: int, actor: str) -> dict[str, Any] | None:
    """Lift block ``block_id``; None when there is no such active block."""
    row = await conn.fetchrow(
        f"""UPDATE blocks SET unblocked_by = $2, unblocked_at = now()
            WHERE id = $1 AND unblocked_at IS NULL RETURNING {_COLUMNS}""",  # noqa: S608 - constants
        block_id,
        actor,
    )
    return None if row is None else _block(row)


async def list_blocks(conn: asyncpg.Connection, *, lifted: bool = False) -> list[dict[str, Any]]:
    """The active blocks, newest first; with ``lifted``, the lifted ones too."""
    where = "" if lifted else "WHERE unblocked_at IS NULL"
    rows = await conn.fetch(f"SELECT {_COLUMNS} FROM blocks {where} ORDER BY id DESC")  # noqa: S608 - constants
    return [_block(r) for r in rows]


async def campaign_blocks(conn: asyncpg.Connection, campaign_id: int) -> list[dict[str, Any]]:
    """The active blocks of one campaign and of its links (through the blocks_active index)."""
    rows = await conn.fetch(
        f"""SELECT {_COLUMNS} FROM blocks
            WHERE coalesce(campaign_id, -1) = $1 AND unblocked_at IS NULL ORDER BY id DESC""",  # noqa: S608 - constants
        campaign_id,
    )
    return [_block(r) for r in rows]


def _block(row: asyncpg.Record) -> dict[str, Any]:
    return {
        "id": row["id"],
        "campaign_id": row["campaign_id"],
        "link_id": row["link_id"],
        "destination_host": row["destination_host"],
        "reason": row["reason"],
        "blocked_by": row["blocked_by"],
        "blocked_at": row["blocked_at"].isoformat(),
        "unblocked_by": row["unblocked_by"],
        "unblocked_at": row["unblocked_at"].isoformat() if row["unblocked_at"] else None,
    }


# What edges need: the active targets only. The version changes with every block made or lifted.
VERSION = "SELECT coalesce(max(id), 0), coalesce(max(unblocked_at)::text, ''), count(*) FROM blocks"
ACTIVE = "SELECT campaign_id, link_id, destination_host FROM blocks WHERE unblocked_at IS NULL ORDER BY id"


@dataclass(frozen=True)
class EdgeList:
    """The active block list as an edge fetches it: its body (JSON) and its ETag."""

    body: bytes
    etag: str


class EdgeListCache:
    """The edge list, rebuilt only when the blocks table has changed (one small query per fetch)."""

    def __init__(self) -> None:
        self._version: tuple[Any, ...] | None = None
        self._list: EdgeList | None = None

    async def current(self, conn: asyncpg.Connection) -> EdgeList:
        row = await conn.fetchrow(VERSION)
        assert row is not None
        version = tuple(row)
        if self._list is None or version != self._version:
            self._list = edge_list(await conn.fetch(ACTIVE))
            self._version = version
        return self._list


def edge_list(rows: list[Any]) -> EdgeList:
    campaigns = sorted({r["campaign_id"] for r in rows if r["campaign_id"] is not None and r["link_id"] is None})
    links = sorted({(r["campaign_id"], r["link_id"]) for r in rows if r["link_id"] is not None})
    hosts = sorted({r["destination_host"] for r in rows if r["destination_host"] is not None})
    body = orjson.dumps({"campaigns": campaigns, "links": links, "hosts": hosts})
    return EdgeList(body, '"' + hashlib.sha256(body).hexdigest()[:32] + '"')
