"""Connecting for one-shot work: each way a connection fails is one line, a configuration error (exit 2) or a
runtime one (exit 1), and never shows the password. Against the session's real PostgreSQL and loopback."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator
from urllib.parse import urlsplit, urlunsplit

import asyncpg
import pytest

from collector.database import DatabaseUnavailable, connect
from common.settings import ConfigError


def with_parts(dsn: str, *, user: str | None = None, password: str | None = None, database: str | None = None) -> str:
    parts = urlsplit(dsn)
    netloc = f"{user or parts.username}:{password or parts.password}@{parts.hostname}:{parts.port}"
    return urlunsplit(parts._replace(netloc=netloc, path=f"/{database}" if database else parts.path))


async def test_refused_credentials_are_a_configuration_error(database_url: str) -> None:
    with pytest.raises(ConfigError, match="refused the credentials") as refused:
        await connect(with_parts(database_url, password="not-the-password"))
    assert "not-the-password" not in str(refused.value)


async def test_a_database_that_does_not_exist_is_a_configuration_error(database_url: str) -> None:
    with pytest.raises(ConfigError, match="does not exist"):
        await connect(with_parts(database_url, database="no_such_database"))


async def test_a_dsn_asyncpg_refuses_is_a_configuration_error(database_url: str) -> None:
    with pytest.raises(ConfigError, match=r"CLICKEDGE_DATABASE_URL is not valid: .*sslmode"):
        await connect(database_url + "?sslmode=sometimes")


@pytest.fixture
async def silent_server() -> AsyncIterator[int]:
    """A loopback server that accepts connections and never says a word: a database that hangs."""
    held: list[asyncio.StreamWriter] = []

    async def accept(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        held.append(writer)

    server = await asyncio.start_server(accept, "127.0.0.1", 0)
    try:
        yield server.sockets[0].getsockname()[1]
    finally:
        for writer in held:
            writer.close()
        server.close()
        await server.wait_closed()


async def test_a_database_that_does_not_answer_is_a_runtime_error(silent_server: int) -> None:
    with pytest.raises(DatabaseUnavailable, match="did not answer within 1s"):
        await connect(f"postgresql://u:pw-s3cret@127.0.0.1:{silent_server}/db", timeout=1.0)


async def test_a_server_that_refuses_connections_now_is_a_runtime_error(
    database_url: str, db: asyncpg.Connection
) -> None:
    # A role allowed no connection at all: PostgreSQL refuses it with "too many connections", as it does
    # when full. Trying again later may work: exit 1, not 2.
    role, password = f"full_{uuid.uuid4().hex[:8]}", "pw-" + uuid.uuid4().hex
    await db.execute(f"CREATE ROLE {role} LOGIN CONNECTION LIMIT 0 PASSWORD '{password}'")
    try:
        with pytest.raises(DatabaseUnavailable, match="refused the connection") as refused:
            await connect(with_parts(database_url, user=role, password=password))
        assert password not in str(refused.value)
    finally:
        await db.execute(f"DROP ROLE {role}")
