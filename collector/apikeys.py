"""Admin API keys: ``ck_<id>_<secret>``. Only a SHA-256 of the secret is stored; it is compared in
constant time. Secrets are 256 random bits, so a fast hash is enough (nothing to brute-force)."""

from __future__ import annotations

import hashlib
import hmac
import re
import secrets
from dataclasses import dataclass

import asyncpg

SCOPES = ("read", "write")
_KEY_ID = re.compile(r"[0-9a-f]{8}")
PREFIX = "ck_"


class ApiKeyError(ValueError):
    pass


@dataclass(frozen=True, slots=True)
class Principal:
    key_id: str
    name: str
    scopes: frozenset[str]

    def allows(self, scope: str) -> bool:
        # write includes read: a key that may change things may also look at them
        return scope in self.scopes or (scope == "read" and "write" in self.scopes)


def _hash(secret: str) -> bytes:
    return hashlib.sha256(secret.encode()).digest()


async def create(conn: asyncpg.Connection, name: str, scopes: list[str]) -> str:
    """Create a key and return it; it is shown this once and cannot be recovered."""
    if not name or len(name) > 100:
        raise ApiKeyError("a key needs a name of 1 to 100 characters")
    if not scopes or any(s not in SCOPES for s in scopes):
        raise ApiKeyError(f"scopes must be among {', '.join(SCOPES)}")
    key_id = secrets.token_hex(4)
    secret = secrets.token_urlsafe(32)
    await conn.execute(
        "INSERT INTO api_keys (key_id, name, secret_hash, scopes) VALUES ($1, $2, $3, $4)",
        key_id,
        name,
        _hash(secret),
        sorted(set(scopes)),
    )
    return f"{PREFIX}{key_id}_{secret}"


def bearer(header: str) -> bytes | None:
    """The credentials of an ``Authorization: Bearer <credentials>`` header as the bytes the client sent,
    or None without them. The one parser of the admin API and click ingest.

    Header bytes that are not UTF-8 reach us as lone surrogates; encoding them back with surrogateescape
    gives the bytes on the wire, so no caller ever handles a str that cannot be encoded (that was a 500).
    """
    scheme, _, credentials = header.partition(" ")
    if scheme.lower() != "bearer":
        return None
    token = credentials.strip(" \t").encode("utf-8", "surrogateescape")
    return token or None


async def authenticate(conn: asyncpg.Connection, token: bytes) -> Principal | None:
    # Keys are ASCII; anything else is not a key, and is never decoded or hashed.
    if len(token) > 200 or not token.isascii():
        return None
    presented = token.decode("ascii")
    key_id, _, secret = presented[len(PREFIX) :].partition("_")
    if not presented.startswith(PREFIX) or not _KEY_ID.fullmatch(key_id) or not secret:
        return None
    row = await conn.fetchrow(
        "SELECT name, secret_hash, scopes FROM api_keys WHERE key_id = $1 AND revoked_at IS NULL", key_id
    )
    if row is None or not hmac.compare_digest(bytes(row["secret_hash"]), _hash(secret)):
        return None
    return Principal(key_id, row["name"], frozenset(row["scopes"]))


async def revoke(conn: asyncpg.Connection, key_id: str) -> bool:
    status: str = await conn.execute(
        "UPDATE api_keys SET revoked_at = now() WHERE key_id = $1 AND revoked_at IS NULL", key_id
    )
    return status.endswith(" 1")


async def listing(conn: asyncpg.Connection) -> list[asyncpg.Record]:
    return list(
        await conn.fetch("SELECT key_id, name, scopes, created_at, revoked_at FROM api_keys ORDER BY created_at")
    )
