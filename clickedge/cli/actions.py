"""`clickedge actions`: show or replace what a link's first click does."""

from __future__ import annotations

import argparse
import asyncio
import getpass
import sys
from typing import Any

import orjson

from clickedge.cli.options import CommandError, WebhookOptions, add_options, load, whole_number
from clickedge.cli.webhooks import master_secret, print_endpoint_secret
from collector import campaigns
from collector.actions import ActionError
from collector.database import connect
from collector.endpoints import Endpoint


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser("actions", help="show or set what a link's first click does")
    p.add_argument("--campaign", type=whole_number, required=True)
    p.add_argument("--link", type=whole_number, required=True)
    p.add_argument(
        "--set",
        dest="new_actions",
        default=None,
        metavar="JSON",
        help='replace the actions, e.g. \'[{"type": "add_tag", "tag": "pricing"}]\'',
    )
    p.add_argument(
        "--on",
        choices=campaigns.ACTIONS_ON,
        default=None,
        help="with --set: whose first click fires them: a person's (human, the default) or any click "
        "(every_click, for links only machines are meant to fetch)",
    )
    add_options(p, WebhookOptions)
    p.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    options = load(WebhookOptions, args)
    wanted = None
    if args.new_actions is not None:
        try:
            wanted = orjson.loads(args.new_actions)
        except orjson.JSONDecodeError as exc:
            raise CommandError(f"--set is not valid JSON: {exc}") from None
    if args.on is not None and wanted is None:
        raise CommandError("--on goes with --set (the actions it applies to)")
    made, link, changes = asyncio.run(_run(args, options.dsn(), wanted))
    master = master_secret(options) if made else None
    for endpoint in made:
        if master is None:
            print(
                f"webhook endpoint {endpoint.id} is new; its secret derives from the collector's webhook "
                f"secret, which is not here: run `clickedge webhooks rotate {endpoint.id}` where it is "
                f"(CLICKEDGE_WEBHOOK_SECRET or DATA_DIR/webhook.secret) to get one",
                file=sys.stderr,
            )
        else:
            print_endpoint_secret(endpoint, master)
    print(orjson.dumps(link["actions"], option=orjson.OPT_INDENT_2).decode())
    print(f"# fired on: {link['actions_on']}", file=sys.stderr)
    for change in changes:
        print(
            f"# {change['at']} {change['actor']}: {len(change['before'])} -> {len(change['after'])} actions",
            file=sys.stderr,
        )
    return 0


async def _run(
    args: argparse.Namespace, dsn: str, wanted: object
) -> tuple[list[Endpoint], dict[str, Any], list[dict[str, Any]]]:
    """Set the actions if asked (the endpoints this made), then the link and its audit trail."""
    conn = await connect(dsn)
    try:
        made: list[Endpoint] = []
        if wanted is not None:
            try:
                _, made = await campaigns.set_actions(
                    conn, args.campaign, args.link, wanted, f"cli:{getpass.getuser()}", on=args.on
                )
            except (ActionError, campaigns.NotFound) as exc:
                raise CommandError(str(exc)) from None
        link = {link["id"]: link for link in await campaigns.list_links(conn, args.campaign)}.get(args.link)
        if link is None:
            raise CommandError(f"campaign {args.campaign} has no link {args.link}")
        return made, link, await campaigns.action_audit(conn, args.campaign, args.link)
    finally:
        await conn.close()
