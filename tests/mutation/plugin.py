"""The pytest plugin of `make mutation` (``-p tests.mutation.plugin``; never loaded by `make test`).

- Each pytest session gets a database of its own, cloned from a migrated template on the server that
  tests/mutation/run.py started: mutmut runs a pytest session per mutant, in forked processes side by side,
  and a database written by one mutant's faults must not decide another's verdict (nor may two sessions
  share the fixed campaign ids some tests use). A clone takes a fraction of a second; a new server per
  mutant would take seconds.
- Hypothesis runs derandomized, with no example database and no deadline: the same examples before and
  after a change, no example carried from one mutant's run into the next, and no kill that is only a slow
  example on a loaded machine.
- CLICKEDGE_SQL_MUTANT names one of tests/mutation/sql_mutants.py's mutants, put into the settling statement
  (collector/settle.py's SETTLE).
"""

from __future__ import annotations

import asyncio
import itertools
import os
from urllib.parse import urlsplit

import asyncpg
import pytest
from hypothesis import settings

TEMPLATE_ENV = "CLICKEDGE_MUTATION_TEMPLATE_URL"  # a migrated database to clone, as a DSN
SQL_MUTANT_ENV = "CLICKEDGE_SQL_MUTANT"
DATABASE_ENV = "CLICKEDGE_DATABASE_URL"  # what tests/conftest.py's database_url fixture takes

_numbers = itertools.count()
_session: list[tuple[str, str, str | None]] = []  # (admin DSN, database, the DATABASE_ENV it replaced)

settings.register_profile("mutation", derandomize=True, database=None, deadline=None)


def pytest_configure(config: pytest.Config) -> None:
    settings.load_profile("mutation")
    template = os.environ.get(TEMPLATE_ENV)
    if template:
        _start_database(template)
    mutant = os.environ.get(SQL_MUTANT_ENV)
    if mutant:
        _put_sql_mutant(mutant)


def pytest_unconfigure(config: pytest.Config) -> None:
    while _session:
        admin, name, replaced = _session.pop()
        asyncio.run(_execute(admin, f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        if replaced is None:
            os.environ.pop(DATABASE_ENV, None)
        else:
            os.environ[DATABASE_ENV] = replaced


def _start_database(template: str) -> None:
    parts = urlsplit(template)
    source = parts.path.lstrip("/")
    name = f"mutation_{os.getpid()}_{next(_numbers)}"  # mutmut forks: the pid tells the sessions apart
    admin = parts._replace(path="/postgres").geturl()
    asyncio.run(_execute(admin, f'CREATE DATABASE "{name}" TEMPLATE "{source}"'))
    _session.append((admin, name, os.environ.get(DATABASE_ENV)))
    os.environ[DATABASE_ENV] = parts._replace(path=f"/{name}").geturl()


async def _execute(dsn: str, statement: str) -> None:
    conn = await asyncpg.connect(dsn)
    try:
        await conn.execute(statement)
    finally:
        await conn.close()


def _put_sql_mutant(name: str) -> None:
    from collector import settle
    from tests.mutation import sql_mutants

    try:
        mutant = sql_mutants.by_name(name)
        # settle() reads the module global at each call.
        settle.SETTLE = sql_mutants.apply(settle.SETTLE, mutant)
    except (KeyError, sql_mutants.StaleMutantError) as exc:
        raise pytest.UsageError(str(exc)) from None
