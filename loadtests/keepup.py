"""Does the collector keep up? Two edge workers at full load, shipping live to one collector, all on this
machine; the edges' unshipped backlog is sampled from their spools on disk while wrk runs. Then the load
stops, the backlog drains, and every answered click is checked in PostgreSQL.

    .venv/bin/python -m loadtests.keepup [--seconds 60] [--workers 2] [--json out.json]

Nothing is pinned: wrk, the edge workers, the collector and PostgreSQL share the machine's cores, as they
would on one small host. A backlog that stays flat means ingest keeps up; one that grows all through the
run means it does not, and the drain time afterwards says by how much.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import time
from pathlib import Path
from typing import Any

import aiohttp

from clickedge.pgembed import free_port
from loadtests.report import as_json, write_json
from loadtests.scratch import Processes, WrkRun, collector_command, cpu_seconds, drain, edge_command, local, stack, wrk

CAMPAIGN = 4_000_000_301
INSERTED = "clickedge_collector_clicks_inserted_total"


def spool_backlog_bytes(spool_root: Path) -> int:
    """Unacknowledged bytes in every worker's spool, read from the files without taking their locks."""
    total = 0
    for worker in spool_root.glob("worker-*"):
        try:
            ack_segment, ack_offset = (int(v) for v in (worker / "ack").read_text().split()[:2])
        except (FileNotFoundError, ValueError):
            ack_segment, ack_offset = 0, 0
        for segment in worker.glob("*.seg"):
            number = int(segment.stem)
            try:
                size = segment.stat().st_size
            except FileNotFoundError:  # acknowledged and deleted meanwhile
                continue
            if number > ack_segment:
                total += size
            elif number == ack_segment:
                total += max(0, size - ack_offset)
    return total


async def inserted_total(http: aiohttp.ClientSession, url: str) -> float:
    async with http.get(url) as resp:
        for line in (await resp.text()).splitlines():
            if line.startswith(INSERTED + " "):
                return float(line.split()[1])
    return 0.0


async def run(seconds: float, workers: int, connections: int) -> dict[str, Any]:
    async with stack("clickedge-keepup-") as parts, Processes() as procs:
        tokens = parts.token_file(CAMPAIGN)
        cport, eport = free_port(), free_port()
        spool = parts.root / "spool"
        collector = await procs.serve(collector_command(cport, parts.data), parts.env, local(cport, "/readyz"))
        edge_argv = edge_command(eport, parts.data, cport, "--workers", str(workers), "--spool-dir", str(spool))
        edge = await procs.serve(edge_argv, parts.env, local(eport, "/readyz"))
        assert parts.pg.process is not None
        groups = {"edges": [edge.pid], "collector": [collector.pid], "postgresql": [parts.pg.process.pid]}
        load, samples, cpu = await sampled_load(
            local(eport), tokens, seconds, connections, spool, local(cport, "/metrics"), groups
        )
        rows, drain_seconds = await drain(parts.pg.dsn, CAMPAIGN, load.answered, timeout=600)
    during = [s for s in samples if s["t"] <= load.seconds]
    return {
        "seconds": load.seconds,
        "workers": workers,
        "requests_per_s": round(load.answered / load.seconds),
        "ingested_per_s_during_load": round(during[-1]["inserted"] / during[-1]["t"]) if during else None,
        "backlog_mb_at_quarter": during[len(during) // 4]["backlog_mb"] if during else None,
        "backlog_mb_at_end": during[-1]["backlog_mb"] if during else None,
        "drain_seconds_after_load": round(drain_seconds, 1),
        **load.checked(rows),
        # CPU per answered click during the load, by process group: what each side costs.
        "cpu_us_per_click": {name: round(1e6 * seconds / load.answered, 1) for name, seconds in cpu.items()},
        "samples": samples,
    }


async def sampled_load(
    url: str,
    tokens: Path,
    seconds: float,
    connections: int,
    spool: Path,
    metrics: str,
    groups: dict[str, list[int]],
) -> tuple[WrkRun, list[dict[str, float]], dict[str, float]]:
    """wrk against the edges, with the backlog and the collector's inserted count sampled while it runs;
    and the CPU each group of processes used meanwhile."""
    samples: list[dict[str, float]] = []
    async with aiohttp.ClientSession() as http:
        before = await inserted_total(http, metrics)
        cpu_before = {name: cpu_seconds(pids) for name, pids in groups.items()}
        started = time.monotonic()
        load = asyncio.create_task(wrk(url, tokens, seconds, connections, None))
        while not load.done():
            await asyncio.wait({load}, timeout=2)  # the sampling interval, not a synchronisation
            samples.append(
                {
                    "t": round(time.monotonic() - started, 1),
                    "backlog_mb": round(spool_backlog_bytes(spool) / 1e6, 2),
                    "inserted": await inserted_total(http, metrics) - before,
                }
            )
        result = load.result()
        cpu = {name: cpu_seconds(pids) - cpu_before[name] for name, pids in groups.items()}
    return result, samples, cpu


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=60)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--connections", type=int, default=64)
    parser.add_argument("--json", type=Path, default=None)
    args = parser.parse_args()
    report = asyncio.run(run(args.seconds, args.workers, args.connections))
    print(as_json(report, leave_out=("samples",)))
    print(
        "t s, backlog MB, inserted: "
        + "; ".join(f"{s['t']}, {s['backlog_mb']}, {s['inserted']:.0f}" for s in report["samples"])
    )
    write_json(args.json, report)
    return 1 if report["clicks_lost"] else 0


if __name__ == "__main__":
    sys.exit(main())
