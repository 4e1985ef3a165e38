"""`clickedge migrate`: bring the database's schema up to date."""

from __future__ import annotations

import argparse
import asyncio

from clickedge.cli.options import DatabaseOptions, add_options, load
from collector.schema import migrate_dsn
from common import logs


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser("migrate", help="bring the database's schema up to date (idempotent)")
    add_options(p, DatabaseOptions)
    p.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    options = load(DatabaseOptions, args)
    logs.configure(options.log_level, "text")
    print(asyncio.run(migrate_dsn(options.dsn())))
    return 0
