"""Click truth, measured: the classifier on the labelled corpus, and what classifying costs ingest.

Starts its own embedded PostgreSQL, then

1. runs the labelled corpus (tests/corpus/scenarios.py) through the collector's real write path
   (tests/corpus/evaluate.py: ingest, the hold, settling) and prints, per scenario and overall, how many
   machines' clicks were labelled a machine's (recall), how many clicks labelled a machine's were
   (precision), how many people's clicks were labelled a machine's, and the link actions machines fired;
2. measures ingest with classification on (a hold of 0: each batch classified and settled in its own
   transaction) against asyncpg's raw binary COPY of the same rows, as loadtests/run.py does.

    .venv/bin/python -m loadtests.bench_verdicts [--scale 1] [--ingest-rows 200000] [--json out.json]
"""

from __future__ import annotations

import argparse
import asyncio
import shutil
import sys
import tempfile
from pathlib import Path
from typing import Any

import asyncpg
import orjson

from clickedge.pgembed import EmbeddedPostgres, free_port
from collector import settle
from collector.networks import DEFAULT_FILE, load
from collector.schema import migrate_dsn
from loadtests.run import ingest_ratio
from tests.corpus.evaluate import evaluate, table
from tests.corpus.scenarios import corpus


async def run(scale: int, ingest_rows: int) -> dict[str, Any]:
    root = Path(tempfile.mkdtemp(prefix="clickedge-bench-verdicts-"))
    pg = EmbeddedPostgres(root / "pg", free_port())
    pg.init()
    await pg.start()
    try:
        await migrate_dsn(pg.dsn)
        scanners = load(DEFAULT_FILE)
        judge = settle.Judge(scanners=lambda: scanners)
        conn = await asyncpg.connect(pg.dsn)
        try:
            scores = await evaluate(conn, corpus(scale), judge, first_campaign=4_000_000_000)
        finally:
            await conn.close()
        ingest = await ingest_ratio(pg.dsn, ingest_rows) if ingest_rows else {}
    finally:
        pg.stop()
        shutil.rmtree(root, ignore_errors=True)
    return {
        "corpus": [
            {
                "scenario": s.scenario,
                "machine_clicks": s.machines,
                "recall": s.recall,
                "precision": s.precision,
                "human_clicks": s.humans,
                "human_mislabelled": s.human_error,
                "actions": s.actions,
                "actions_by_machines": s.actions_by_machines,
                "reasons": dict(s.reasons.most_common()),
            }
            for s in scores
        ],
        "table": table(scores),
        "ingest": ingest,
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m loadtests.bench_verdicts", description=__doc__)
    parser.add_argument("--scale", type=int, default=1, help="multiply the corpus's messages")
    parser.add_argument("--ingest-rows", type=int, default=200_000, help="rows for the ingest measurement (0: skip)")
    parser.add_argument("--json", type=Path, default=None, help="also write the results here")
    args = parser.parse_args(argv)
    result = asyncio.run(run(args.scale, args.ingest_rows))
    print(result["table"])
    total = result["corpus"][-1]
    print(f"\nreasons overall: {total['reasons']}")
    ingest = result["ingest"]
    if ingest:
        print(
            f"\ningest with classification {ingest['ingest_rows_per_s']:,.0f} rows/s vs raw binary COPY "
            f"{ingest['copy_rows_per_s']:,.0f} rows/s: ratio {ingest['ratio']:.2f} "
            f"(COPY with the collector's encoder {ingest['copy_encoded_rows_per_s']:,.0f} rows/s: "
            f"ratio {ingest['ratio_same_encoder']:.2f})"
        )
    if args.json:
        args.json.write_bytes(orjson.dumps(result, option=orjson.OPT_INDENT_2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
