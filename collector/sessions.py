"""Signing in to the report pages (collector/ui/): one-time sign-in URLs, sessions and their cross-site request tokens.

- ``clickedge login-url`` stores a one-time token (only its SHA-256) valid for SIGN_IN_TTL. Its URL is the
  only secret that ever appears in a URL; the first request that presents it spends it (a DELETE ...
  RETURNING, so two requests at once cannot both use it).
- An API key (pasted into the sign-in form) or a spent token becomes a session: a random id and a 256-bit
  secret in one cookie, of which only a hash is stored. Its scopes are the key's (or the token's), and it
  ends when it expires (SESSION_TTL after sign-in), is revoked, or its API key is revoked.
- Every form carries a token derived from the session's stored hash (HMAC), checked on each POST; without
  the database nobody can make one, and it changes with every session.
"""

from __future__ import annotations

import hashlib
import hmac
import re
import secrets
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

import asyncpg

from collector.apikeys import SCOPES

SIGN_IN_TTL = timedelta(minutes=10)
SESSION_TTL = timedelta(hours=12)
COOKIE = "clickedge_session"
HOME = "/ui/"
_SESSION_ID = re.compile(r"[0-9a-f]{16}")
_SEEN_EVERY = timedelta(minutes=1)  # last_seen_at is written at most this often per session
_NEXT = re.compile(r"/ui/[A-Za-z0-9/_.\-]*(\?[A-Za-z0-9=&_.\-]*)?")


class SignInError(ValueError):
    pass


@dataclass(frozen=True, slots=True)
class Session:
    session_id: str
    name: str
    scopes: frozenset[str]
    csrf: str

    def allows(self, scope: str) -> bool:
        return scope in self.scopes or (scope == "read" and "write" in self.scopes)


def _hash(secret: str) -> bytes:
    return hashlib.sha256(secret.encode()).digest()


def safe_next(path: str | None) -> str:
    """Where to land after signing in: a path of the pages, never another site (an open redirect)."""
    if path and len(path) <= 500 and _NEXT.fullmatch(path) and "//" not in path and ".." not in path:
        return path
    return HOME


async def create_sign_in(conn: asyncpg.Connection, scopes: list[str], next_path: str | None) -> tuple[str, str]:
    """A one-time sign-in token and where it lands: (token, next path)."""
    if not scopes or any(s not in SCOPES for s in scopes):
        raise SignInError(f"scopes must be among {', '.join(SCOPES)}")
    landing = safe_next(next_path)
    if next_path is not None and landing != next_path:
        raise SignInError(f"--next must be a path of the report pages (starting /ui/), not {next_path[:80]!r}")
    token = secrets.token_urlsafe(32)
    await conn.execute(
        """INSERT INTO ui_sign_in_tokens (token_hash, scopes, next_path, expires_at)
           VALUES ($1, $2, $3, now() + $4::interval)""",
        _hash(token),
        sorted(set(scopes)),
        landing,
        SIGN_IN_TTL,
    )
    return token, landing


async def spend_sign_in(conn: asyncpg.Connection, token: str, user_agent: str) -> tuple[str, str] | None:
    """Spend a one-time token: (the new session's cookie value, where to land), or None if the token is
    unknown, spent or expired. Expired tokens are cleared on the way."""
    if not token or len(token) > 100 or not token.isascii():
        return None
    async with conn.transaction():
        await conn.execute("DELETE FROM ui_sign_in_tokens WHERE expires_at < now()")
        row = await conn.fetchrow(
            "DELETE FROM ui_sign_in_tokens WHERE token_hash = $1 AND expires_at >= now() RETURNING scopes, next_path",
            _hash(token),
        )
        if row is None:
            return None
        cookie = await _start(conn, None, "one-time sign-in URL", list(row["scopes"]), user_agent)
    return cookie, row["next_path"]


async def sign_in_with_key(conn: asyncpg.Connection, key_id: str, name: str, scopes: frozenset[str], agent: str) -> str:
    """A session for an authenticated API key; its cookie value."""
    return await _start(conn, key_id, name, sorted(scopes), agent)


async def _start(conn: asyncpg.Connection, key_id: str | None, name: str, scopes: list[str], agent: str) -> str:
    session_id = secrets.token_hex(8)
    secret = secrets.token_urlsafe(32)
    await conn.execute(
        """INSERT INTO ui_sessions (session_id, secret_hash, key_id, name, scopes, user_agent, expires_at)
           VALUES ($1, $2, $3, $4, $5, $6, now() + $7::interval)""",
        session_id,
        _hash(secret),
        key_id,
        name[:100],
        scopes,
        agent[:200],
        SESSION_TTL,
    )
    return f"{session_id}.{secret}"


async def resume(conn: asyncpg.Connection, cookie: str | None) -> Session | None:
    """The live session a cookie names, or None (unknown, wrong secret, expired, revoked, key revoked)."""
    if not cookie or len(cookie) > 100 or not cookie.isascii():
        return None
    session_id, _, secret = cookie.partition(".")
    if not _SESSION_ID.fullmatch(session_id) or not secret:
        return None
    row = await conn.fetchrow(
        """SELECT s.secret_hash, s.name, s.scopes, now() - s.last_seen_at > $2::interval AS stale
           FROM ui_sessions s LEFT JOIN api_keys k USING (key_id)
           WHERE s.session_id = $1 AND s.revoked_at IS NULL AND s.expires_at > now()
             AND (s.key_id IS NULL OR k.revoked_at IS NULL)""",
        session_id,
        _SEEN_EVERY,
    )
    if row is None or not hmac.compare_digest(bytes(row["secret_hash"]), _hash(secret)):
        return None
    if row["stale"]:
        await conn.execute("UPDATE ui_sessions SET last_seen_at = now() WHERE session_id = $1", session_id)
    csrf = hmac.new(bytes(row["secret_hash"]), b"clickedge ui form", hashlib.sha256).hexdigest()
    return Session(session_id, row["name"], frozenset(row["scopes"]), csrf)


def form_token_ok(session: Session, given: str | None) -> bool:
    return given is not None and hmac.compare_digest(session.csrf.encode(), given.encode("utf-8", "replace"))


async def revoke(conn: asyncpg.Connection, session_id: str, actor: str) -> bool:
    status: str = await conn.execute(
        "UPDATE ui_sessions SET revoked_at = now(), revoked_by = $2 WHERE session_id = $1 AND revoked_at IS NULL",
        session_id,
        actor[:200],
    )
    return status.endswith(" 1")


async def listing(conn: asyncpg.Connection) -> list[dict[str, Any]]:
    """The sessions that are live now, newest first (never their secrets)."""
    rows = await conn.fetch(
        """SELECT s.session_id, s.key_id, s.name, s.scopes, s.user_agent, s.created_at, s.last_seen_at, s.expires_at
           FROM ui_sessions s LEFT JOIN api_keys k USING (key_id)
           WHERE s.revoked_at IS NULL AND s.expires_at > now() AND (s.key_id IS NULL OR k.revoked_at IS NULL)
           ORDER BY s.created_at DESC"""
    )
    return [
        {
            "id": r["session_id"],
            "key_id": r["key_id"],
            "name": r["name"],
            "scopes": list(r["scopes"]),
            "user_agent": r["user_agent"],
            "created_at": r["created_at"].isoformat(),
            "last_seen_at": r["last_seen_at"].isoformat(),
            "expires_at": r["expires_at"].isoformat(),
        }
        for r in rows
    ]
