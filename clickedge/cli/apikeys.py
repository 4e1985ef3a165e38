"""`clickedge apikeys`: create, list and revoke admin API keys."""

from __future__ import annotations

import argparse
import asyncio
import sys

from clickedge.cli.options import CommandError, DatabaseOptions, add_options, load
from collector import apikeys
from collector.database import connect


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser("apikeys", help="create, list and revoke admin API keys")
    add_options(p, DatabaseOptions)
    actions = p.add_subparsers(dest="action", metavar="ACTION")
    listed = actions.add_parser("list", help="list keys (the default)")
    created = actions.add_parser("create", help="create a key and print it (once)")
    created.add_argument("--name", required=True)
    created.add_argument("--scope", action="append", choices=["read", "write"], required=True)
    revoked = actions.add_parser("revoke", help="revoke a key by its id")
    revoked.add_argument("key_id")
    for action in (listed, created, revoked):
        add_options(action, DatabaseOptions, suppress=True)
    p.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    return asyncio.run(_run(args, load(DatabaseOptions, args).dsn()))


async def _run(args: argparse.Namespace, dsn: str) -> int:
    conn = await connect(dsn)
    try:
        action = args.action or "list"
        if action == "create":
            try:
                key = await apikeys.create(conn, args.name, args.scope)
            except apikeys.ApiKeyError as exc:
                raise CommandError(str(exc)) from None
            print(key)
            print("Keep it: it is shown this once (only a hash is stored).", file=sys.stderr)
            return 0
        if action == "revoke":
            if not await apikeys.revoke(conn, args.key_id):
                raise CommandError(f"no active key {args.key_id}")
            print(f"revoked {args.key_id}")
            return 0
        for row in await apikeys.listing(conn):
            state = f"revoked {row['revoked_at']:%Y-%m-%d}" if row["revoked_at"] else "active"
            print(f"{row['key_id']}  {','.join(row['scopes']):<11} {state:<18} {row['name']}")
        return 0
    finally:
        await conn.close()
