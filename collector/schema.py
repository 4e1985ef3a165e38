"""Applying schema.sql, the database's source of truth."""

from __future__ import annotations

from pathlib import Path

import asyncpg

from collector.database import connect

# In the source tree collector/schema.sql links to the root schema.sql; a built wheel carries a copy.
SCHEMA_PATH = Path(__file__).resolve().parent / "schema.sql"
_LOCK = "SELECT pg_advisory_xact_lock(hashtext('clickedge.schema'))"


async def migrate(conn: asyncpg.Connection, schema: Path = SCHEMA_PATH) -> None:
    """Apply the schema idempotently, in one transaction, serialised against other migrators."""
    sql = schema.read_text()  # noqa: ASYNC240 - once, at start-up
    async with conn.transaction():
        await conn.execute(_LOCK)
        await conn.execute(sql)


async def migrate_dsn(dsn: str, schema: Path = SCHEMA_PATH) -> None:
    conn = await connect(dsn)
    try:
        await migrate(conn, schema)
    finally:
        await conn.close()


async def ensure_partitions(conn: asyncpg.Connection) -> int:
    created: int = await conn.fetchval("SELECT clickedge_ensure_click_partitions(1, 3)")
    return created
