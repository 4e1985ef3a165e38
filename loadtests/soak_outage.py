"""Edge memory through a collector outage: RSS sampled while wrk drives one edge worker whose collector
is down, so every click piles up in the spool on disk. Then the collector comes back and the backlog
drains; the harness reports clicks lost (must be 0).

    .venv/bin/python -m loadtests.soak_outage [--minutes 10] [--rate 5000 | --rate 0] [--json out.json]

``--rate 0`` drives the edge at full load (no pacing; wrk and the edge on one core each) with a spool cap
large enough for the whole outage.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import time
from pathlib import Path
from typing import Any

from clickedge.pgembed import free_port
from loadtests.report import as_json, write_json
from loadtests.scratch import Processes, collector_command, drain, edge_command, local, rss_mb, stack, wrk

CAMPAIGN = 4_000_000_201


async def run(minutes: float, rate: int, connections: int = 64) -> dict[str, Any]:
    full_load = rate <= 0
    async with stack("clickedge-soak-") as parts, Processes() as procs:
        tokens = parts.token_file(CAMPAIGN)
        cport, eport = free_port(), free_port()
        # Room on disk for the whole outage at full load (about 190 bytes a click).
        spool_cap = str(64 << 30 if full_load else 1 << 30)
        edge_argv = edge_command(eport, parts.data, cport, "--shutdown-timeout", "1", "--spool-max-bytes", spool_cap)
        edge = await procs.serve(edge_argv, parts.env, local(eport, "/readyz"), 1)
        samples: list[tuple[float, float]] = []
        started = time.monotonic()
        load = asyncio.create_task(
            wrk(
                local(eport),
                tokens,
                minutes * 60,
                connections,
                0,
                None if full_load else 1000 * connections / rate,
            )
        )
        while not load.done():
            samples.append((round(time.monotonic() - started), round(rss_mb([edge.pid]), 1)))
            await asyncio.wait({load}, timeout=10)
        result = load.result()
        await procs.start(collector_command(cport, parts.data), parts.env)
        rows, drain_seconds = await drain(parts.pg.dsn, CAMPAIGN, result.answered, timeout=1800)
    rss = [mb for _, mb in samples]
    return {
        "minutes": minutes,
        "requests_per_s": result.answered / result.seconds,
        **result.checked(rows),
        "rss_mb_first": rss[0] if rss else None,
        "rss_mb_max": max(rss) if rss else None,
        "rss_mb_last": rss[-1] if rss else None,
        "drain_seconds": round(drain_seconds, 1),
        "samples": samples,
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--minutes", type=float, default=10)
    parser.add_argument("--rate", type=int, default=5000, help="about this many clicks/s (paced wrk); 0: full load")
    parser.add_argument("--json", type=Path, default=None)
    args = parser.parse_args()
    report = asyncio.run(run(args.minutes, args.rate))
    print(as_json(report, leave_out=("samples",)))
    write_json(args.json, report)
    return 1 if report["clicks_lost"] else 0


if __name__ == "__main__":
    sys.exit(main())
