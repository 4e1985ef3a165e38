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
from loadtests.run import collector_command, count_arrived, edge_command, rss_mb, scratch, start, stop, wait_http, wrk

CAMPAIGN = 4_000_000_201


async def run(minutes: float, rate: int, connections: int = 64) -> dict[str, Any]:
    full_load = rate <= 0
    procs = []
    async with scratch("clickedge-soak-", CAMPAIGN) as stack:
        data, tokens, env, pg = stack.data, stack.tokens, stack.env, stack.pg
        try:
            cport, eport = free_port(), free_port()
            # Room on disk for the whole outage at full load (about 190 bytes a click).
            spool_cap = str(64 << 30 if full_load else 1 << 30)
            edge = await start(
                edge_command(eport, data, cport, "--shutdown-timeout", "1", "--spool-max-bytes", spool_cap),
                env,
                1,
            )
            procs.append(edge)
            await wait_http(f"http://127.0.0.1:{eport}/readyz")
            samples: list[tuple[float, float]] = []
            started = time.monotonic()
            load = asyncio.create_task(
                wrk(
                    f"http://127.0.0.1:{eport}",
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
            answered = result["requests"] - result["status"]
            collector = await start(
                collector_command(cport, data),
                env,
            )
            procs.append(collector)
            drain_started = time.monotonic()
            rows = await count_arrived(pg.dsn, CAMPAIGN, answered, timeout=1800)
            drain_seconds = time.monotonic() - drain_started
        finally:
            for proc in procs:
                await stop(proc)
    rss = [mb for _, mb in samples]
    return {
        "minutes": minutes,
        "requests_per_s": answered / (result["duration_us"] / 1e6),
        "answered": answered,
        "rows": rows,
        "clicks_lost": max(0, answered - rows),
        "errors": result["connect"] + result["read"] + result["write"] + result["status"] + result["timeout"],
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
