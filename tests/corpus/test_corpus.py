"""The classifier on the labelled corpus, through the real write path: the issue's targets hold.

At least 95 % of machines' clicks labelled a machine's, at most 1 % of people's clicks labelled a machine's,
and no link action fired by a machine's click. `python -m loadtests.bench_verdicts` prints the same table for
loadtests/README.md.
"""

from __future__ import annotations

import asyncpg

from collector import settle
from collector.networks import DEFAULT_FILE, load
from tests.corpus.evaluate import evaluate, table
from tests.corpus.scenarios import corpus

SCANNERS = load(DEFAULT_FILE)
JUDGE = settle.Judge(scanners=lambda: SCANNERS)


async def test_the_corpus_meets_the_targets(db: asyncpg.Connection) -> None:
    scores = await evaluate(db, corpus(), JUDGE, first_campaign=4_100_000_000)
    print(table(scores))
    total = scores[-1]
    assert total.recall is not None and total.recall >= 0.95, table(scores)
    assert total.human_error is not None and total.human_error <= 0.01, table(scores)
    assert total.actions_by_machines == 0, table(scores)
    assert total.actions > 0
