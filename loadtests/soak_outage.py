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
import shutil
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import orjson

from clickedge.pgembed import EmbeddedPostgres, free_port
from collector.schema import migrate_dsn
from edge import keys
from loadtests.run import SECRET, count_arrived, rss_mb, start, stop, wait_http, write_tokens, wrk

CAMPAIGN = 4_000_000_201


async def run(minutes: float, rate: int, connections: int = 64) -> dict[str, Any]:
    full_load = rate <= 0
    root = Path(tempfile.mkdtemp(prefix="clickedge-soak-"))
    pg = EmbeddedPostgres(root / "pg", free_port())
    pg.init()
    await pg.start()
    procs = []
    try:
        await migrate_dsn(pg.dsn)
        data = root / "data"
        keys.load_or_create(data / "keys.json")
        tokens = root / "tokens.txt"
        write_tokens(data, tokens, CAMPAIGN, 50_000)
        env = {"CLICKEDGE_INGEST_SECRET": SECRET, "CLICKEDGE_DATABASE_URL": pg.dsn, "CLICKEDGE_LOG_LEVEL": "ERROR"}
        cport, eport = free_port(), free_port()
        edge = await start(
            [
                sys.executable,
                "-m",
                "clickedge",
                "edge",
                "--edge-port",
                str(eport),
                "--data-dir",
                str(data),
                "--collector-url",
                f"http://127.0.0.1:{cport}",
                "--drain-grace",
                "0",
                "--shutdown-timeout",
                "1",
                # Room on disk for the whole outage at full load (about 190 bytes a click).
                "--spool-max-bytes",
                str(64 << 30 if full_load else 1 << 30),
            ],
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
            [sys.executable, "-m", "clickedge", "collector", "--collector-port", str(cport), "--data-dir", str(data)],
            env,
        )
        procs.append(collector)
        drain_started = time.monotonic()
        rows = await count_arrived(pg.dsn, CAMPAIGN, answered, timeout=1800)
        drain_seconds = time.monotonic() - drain_started
    finally:
        for proc in procs:
            await stop(proc)
        pg.stop()
        shutil.rmtree(root, ignore_errors=True)
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
    print(orjson.dumps({k: v for k, v in report.items() if k != "samples"}, option=orjson.OPT_INDENT_2).decode())
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_bytes(orjson.dumps(report, option=orjson.OPT_INDENT_2))
    return 1 if report["clicks_lost"] else 0


if __name__ == "__main__":
    sys.exit(main())
