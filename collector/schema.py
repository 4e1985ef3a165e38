"""The database schema: schema.sql for a new database, ordered migrations for one made earlier.

`migrate` runs in one transaction under an advisory lock, so several collectors (or `up` and a migrate job)
may call it at once: the second waits, then finds nothing left to do. The version is kept in
schema_migrations (version, name, applied_at):

- an empty database gets schema.sql, the complete current schema, recorded as the latest version;
- a recorded database gets each migration above its highest recorded version, in order, each recorded;
- a database with Clickedge's tables but no schema_migrations was kept current by the old idempotent
  schema.sql, at some unknown commit. It is taken to be at version 0 and gets every migration from
  0001: each is idempotent (IF NOT EXISTS, CREATE OR REPLACE, ON CONFLICT DO NOTHING), so one that is
  already in place changes nothing.

Then the click partitions are checked, as every run of the old schema.sql did.

A change to the schema is a new file here, migrations/NNNN_what_it_does.sql (idempotent where cheap), and
the same change in schema.sql; tests/collector/test_schema.py checks that both give the same database. A
migration runs inside the transaction, so nothing that refuses one (CREATE INDEX CONCURRENTLY).

A runner of a few dozen lines rather than a library: yoyo-migrations works through a DB-API driver
(psycopg), a second PostgreSQL driver beside asyncpg, and serialises with a lock table of its own; alembic
brings SQLAlchemy for migrations written in Python, and takes no lock. Neither would apply schema.sql to an
empty database under our advisory lock, in the transaction that records it. Forward-only SQL files
recorded by number need none of their other features.
"""

from __future__ import annotations

import logging
import re
from dataclasses import dataclass
from pathlib import Path

import asyncpg

from collector.database import connect

log = logging.getLogger(__name__)

# In the source tree collector/schema.sql links to the root schema.sql; a built wheel carries a copy.
SCHEMA_PATH = Path(__file__).resolve().parent / "schema.sql"
MIGRATIONS_DIR = Path(__file__).resolve().parent / "migrations"
_LOCK = "SELECT pg_advisory_xact_lock(hashtext('clickedge.schema'))"
_VERSIONS = """CREATE TABLE IF NOT EXISTS schema_migrations (
    version     integer PRIMARY KEY,
    name        text NOT NULL,
    applied_at  timestamptz NOT NULL DEFAULT now()
)"""
# Neither the version table nor the first release's first table: nothing of Clickedge's is there yet.
_EMPTY = "SELECT to_regclass('schema_migrations') IS NULL AND to_regclass('campaigns') IS NULL"
_NAME = re.compile(r"(\d{4})_[a-z0-9_]+\.sql")


@dataclass(frozen=True, slots=True)
class Migration:
    version: int
    name: str  # the file's name without .sql: 0002_reports_and_link_actions
    path: Path


@dataclass(frozen=True, slots=True)
class Migrated:
    """What one `migrate` did: what it applied, in order, and the version the database is at now."""

    applied: tuple[str, ...]
    version: int
    name: str
    known: int  # the latest version this code has a migration for

    def __str__(self) -> str:
        lines = [f"applied {name}" for name in self.applied] or ["nothing to apply"]
        ahead = f"; this clickedge knows versions up to {self.known}" if self.version > self.known else ""
        return "\n".join([*lines, f"schema at version {self.version} ({self.name}){ahead}"])


def migrations(directory: Path = MIGRATIONS_DIR) -> list[Migration]:
    """The migration files, in version order; numbers start at 1 and have no gaps."""
    found = [Migration(int(m[1]), path.stem, path) for path in directory.iterdir() if (m := _NAME.fullmatch(path.name))]
    found.sort(key=lambda migration: migration.version)
    if [m.version for m in found] != list(range(1, len(found) + 1)):
        raise RuntimeError(f"migrations in {directory} are not numbered 1..N: {[m.name for m in found]}")
    return found


async def migrate(conn: asyncpg.Connection, *, upto: int | None = None) -> Migrated:
    """Bring the schema up to date (or up to version `upto`), in one transaction, serialised against
    other migrators."""
    known = migrations()
    wanted = [m for m in known if upto is None or m.version <= upto]
    applied: list[str] = []
    async with conn.transaction():
        await conn.execute(_LOCK)
        empty = await conn.fetchval(_EMPTY)
        await conn.execute(_VERSIONS)
        if empty and wanted == known:
            await conn.execute(SCHEMA_PATH.read_text())
            await _record(conn, known[-1])
            applied.append(SCHEMA_PATH.name)
        else:
            current: int = await conn.fetchval("SELECT coalesce(max(version), 0) FROM schema_migrations")
            for migration in (m for m in wanted if m.version > current):
                await conn.execute(migration.path.read_text())
                await _record(conn, migration)
                applied.append(migration.name)
        await ensure_partitions(conn)
        row = await conn.fetchrow("SELECT version, name FROM schema_migrations ORDER BY version DESC LIMIT 1")
    for name in applied:
        log.info("schema: applied %s", name)
    version, name = (row["version"], row["name"]) if row else (0, "empty")
    return Migrated(tuple(applied), version, name, known[-1].version)


async def _record(conn: asyncpg.Connection, migration: Migration) -> None:
    await conn.execute(
        "INSERT INTO schema_migrations (version, name) VALUES ($1, $2)", migration.version, migration.name
    )


async def migrate_dsn(dsn: str) -> Migrated:
    conn = await connect(dsn)
    try:
        return await migrate(conn)
    finally:
        await conn.close()


async def ensure_partitions(conn: asyncpg.Connection, months_back: int = 1) -> int:
    """Make the monthly partitions of clicks from ``months_back`` months ago to 3 months ahead; how many."""
    created: int = await conn.fetchval("SELECT clickedge_ensure_click_partitions($1, 3)", months_back)
    return created
