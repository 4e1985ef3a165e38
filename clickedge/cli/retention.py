"""`clickedge retention run`: remove the raw clicks older than the retention now (the collector does it
hourly by itself when CLICKEDGE_RETENTION_DAYS is set)."""

from __future__ import annotations

import argparse
import asyncio

from clickedge.cli.options import CommandError, RetentionOptions, add_options, load
from collector import retention
from collector.database import connect
from common import logs


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser("retention", help="remove raw clicks older than CLICKEDGE_RETENTION_DAYS (reports stay)")
    actions = p.add_subparsers(dest="action", required=True, metavar="ACTION")
    run_parser = actions.add_parser(
        "run", help="drop the monthly partitions of raw clicks wholly older than the retention, now"
    )
    run_parser.add_argument("--dry-run", action="store_true", help="say what would be removed; remove nothing")
    add_options(run_parser, RetentionOptions)
    run_parser.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    options = load(RetentionOptions, args)
    logs.configure(options.log_level, "text")
    if options.retention_days is None:
        raise CommandError(
            "no retention set: set CLICKEDGE_RETENTION_DAYS or --retention-days (unset, every click is kept)"
        )
    removed = asyncio.run(_run(options.dsn(), options.retention_days, args.dry_run))
    verb = ("would drop", "would delete") if args.dry_run else ("dropped", "deleted")
    print(f"retention {options.retention_days} days: raw clicks before {removed.cutoff.isoformat(timespec='seconds')}")
    print(f"{verb[0]} {len(removed.partitions)} partitions: {', '.join(removed.partitions) or '-'}")
    print(f"{verb[1]} {removed.default_rows} rows of clicks_default and {removed.refused_rows} of refused_clicks")
    return 0


async def _run(dsn: str, days: int, dry_run: bool) -> retention.Removed:
    conn = await connect(dsn)
    try:
        return await retention.run(conn, days, dry_run=dry_run)
    finally:
        await conn.close()
