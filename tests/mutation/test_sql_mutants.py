"""The hand-written SQL mutants of `make mutation` still fit the settling statement (collector/settle.py's
SETTLE): each one's text occurs in it exactly once, each one changes it, and PostgreSQL accepts what it makes.
A mutant whose text has gone would otherwise fail the mutation run late, one that changed nothing would
survive for no reason, and one that is not valid SQL would be killed by any test and say nothing."""

from __future__ import annotations

import asyncpg
import pytest

from collector.settle import CREATE_CLAIM_STAGE, SETTLE
from tests.mutation.sql_mutants import MUTANTS, SqlMutant, StaleMutantError, apply, by_name


@pytest.mark.parametrize("mutant", MUTANTS, ids=[m.name for m in MUTANTS])
def test_each_mutant_applies_once_and_changes_the_statement(mutant: SqlMutant) -> None:
    assert apply(SETTLE, mutant) != SETTLE


def test_names_are_unique_and_found() -> None:
    assert len({m.name for m in MUTANTS}) == len(MUTANTS)
    assert by_name(MUTANTS[0].name) is MUTANTS[0]
    with pytest.raises(KeyError, match="no SQL mutant named"):
        by_name("no-such-mutant")


def test_a_mutant_whose_text_is_gone_is_refused() -> None:
    with pytest.raises(StaleMutantError, match="occurs 0 times"):
        apply(SETTLE, SqlMutant("gone", "nothing", "no such text", "x"))


async def test_each_mutant_is_a_statement_postgresql_accepts(db: asyncpg.Connection) -> None:
    await db.execute(CREATE_CLAIM_STAGE)
    for mutant in MUTANTS:
        await db.prepare(apply(SETTLE, mutant))  # parsed, analysed and planned; nothing runs
