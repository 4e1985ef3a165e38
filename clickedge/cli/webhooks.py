"""`clickedge webhooks`: list webhook endpoints, or give one a new signing secret (printed once)."""

from __future__ import annotations

import argparse
import asyncio
import sys
from typing import TextIO

from clickedge.cli.options import CommandError, WebhookOptions, add_options, load, whole_number
from collector import endpoints
from collector.config import existing_webhook_secret
from collector.database import connect


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser("webhooks", help="list webhook endpoints, or give one a new signing secret")
    add_options(p, WebhookOptions)
    actions = p.add_subparsers(dest="action", metavar="ACTION")
    listed = actions.add_parser("list", help="list endpoints (the default); secrets are never listed")
    rotated = actions.add_parser("rotate", help="give an endpoint a new secret and print it (once)")
    rotated.add_argument("endpoint_id", type=whole_number)
    for action in (listed, rotated):
        add_options(action, WebhookOptions, suppress=True)
    p.set_defaults(run=run)


def master_secret(options: WebhookOptions) -> bytes | None:
    return existing_webhook_secret(options.webhook_secret, options.data_dir)


def print_endpoint_secret(endpoint: endpoints.Endpoint, master: bytes, file: TextIO = sys.stderr) -> None:
    shown = endpoint.public()["url"]
    print(f"webhook endpoint {endpoint.id} ({shown}) generation {endpoint.generation} secret:", file=sys.stderr)
    print(endpoint.secret(master), file=file)
    print("Give it to that receiver: it is shown this once (only the master secret is kept).", file=sys.stderr)


def run(args: argparse.Namespace) -> int:
    options = load(WebhookOptions, args)
    master = master_secret(options)
    if args.action == "rotate" and master is None:
        # Rotating without the master would leave an endpoint whose secret nobody has seen.
        raise CommandError(
            "the collector's webhook secret is not here: set CLICKEDGE_WEBHOOK_SECRET or --data-dir to the "
            "collector's data dir"
        )
    return asyncio.run(_run(args, options.dsn(), master))


async def _run(args: argparse.Namespace, dsn: str, master: bytes | None) -> int:
    conn = await connect(dsn)
    try:
        if args.action == "rotate":
            assert master is not None
            try:
                endpoint = await endpoints.rotate(conn, args.endpoint_id)
            except endpoints.NotFound as exc:
                raise CommandError(str(exc)) from None
            print_endpoint_secret(endpoint, master, sys.stdout)
            return 0
        after = 0
        while True:
            page, next_after = await endpoints.listing(conn, after=after, limit=1000)
            for e in page:
                rotated = f"rotated {e.rotated_at:%Y-%m-%d}" if e.rotated_at else "never rotated"
                print(f"{e.id:>6}  gen {e.generation:<4} {rotated:<18} {e.public()['url']}")
            if next_after is None:
                return 0
            after = next_after
    finally:
        await conn.close()
