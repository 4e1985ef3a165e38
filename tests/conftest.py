"""Shared fixtures: one real PostgreSQL per test session, real servers on real sockets."""

from __future__ import annotations

import asyncio
import os
import shutil
import tempfile
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import TypeVar
from urllib.parse import urlsplit

import asyncpg
import pytest

from clickedge.pgembed import EmbeddedPostgres, free_port
from collector.schema import migrate_dsn
from links import keys

T = TypeVar("T")
INGEST_SECRET = "test-ingest-secret-0123456789"


@pytest.fixture(scope="session")
def database_url() -> Iterator[str]:
    """CLICKEDGE_DATABASE_URL if set, else an embedded PostgreSQL started once for the session."""
    external = os.environ.get("CLICKEDGE_DATABASE_URL")
    if external:
        asyncio.run(migrate_dsn(external))
        yield external
        return
    root = Path(tempfile.mkdtemp(prefix="clickedge-test-"))
    pg = EmbeddedPostgres(root / "pg", free_port())
    pg.init()
    asyncio.run(pg.start())
    try:
        asyncio.run(migrate_dsn(pg.dsn))
        yield pg.dsn
    finally:
        pg.stop()
        shutil.rmtree(root, ignore_errors=True)


@pytest.fixture
async def db(database_url: str) -> AsyncIterator[asyncpg.Connection]:
    conn = await asyncpg.connect(database_url)
    try:
        yield conn
    finally:
        await conn.close()


NewDatabase = Callable[[], Awaitable[str]]


def _with_database(dsn: str, name: str) -> str:
    return urlsplit(dsn)._replace(path=f"/{name}").geturl()


@asynccontextmanager
async def databases(server_dsn: str) -> AsyncIterator[NewDatabase]:
    admin = await asyncpg.connect(server_dsn)
    made: list[str] = []

    async def make() -> str:
        name = f"clickedge_test_{uuid.uuid4().hex[:12]}"
        await admin.execute(f'CREATE DATABASE "{name}"')
        made.append(name)
        return _with_database(server_dsn, name)

    try:
        yield make
    finally:
        for name in made:
            await admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        await admin.close()


@pytest.fixture
async def new_database(database_url: str) -> AsyncIterator[NewDatabase]:
    """Makes empty databases on the session's server; they are dropped after the test."""
    async with databases(database_url) as make:
        yield make


@pytest.fixture
def data_dir(tmp_path: Path) -> Path:
    """A data dir with one active key and an ingest secret, as `clickedge up` leaves it."""
    keys.load_or_create(tmp_path / "keys.json")
    (tmp_path / "ingest.secret").write_text(INGEST_SECRET + "\n")
    return tmp_path


_campaigns = iter(range(1_000_000 + os.getpid() % 1000 * 10_000, 2**32))


def new_campaign_id() -> int:
    """A campaign id no other test uses: each test owns its rows."""
    return next(_campaigns)


@pytest.fixture
def campaign_id() -> int:
    """A campaign id no other test uses: each test owns its rows."""
    return new_campaign_id()


def require(available: bool, what: str) -> None:
    """A test that needs something from the machine: in CI (CI=true, where .ci/run installs it) its absence
    fails the test; on a developer's machine without it, the test is skipped and says what to install."""
    if available:
        return
    if os.environ.get("CI"):
        pytest.fail(f"{what} is required in CI")
    pytest.skip(f"needs {what}")


async def eventually(check: Callable[[], Awaitable[T]], *, timeout: float = 10.0, interval: float = 0.02) -> T:
    """Poll ``check`` until it returns a truthy value or the deadline passes (then fail)."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while True:
        value = await check()
        if value:
            return value
        if loop.time() > deadline:
            pytest.fail(f"condition not met within {timeout}s (last value {value!r})")
        await asyncio.sleep(interval)
