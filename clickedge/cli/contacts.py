"""`clickedge contacts`: everything stored about one contact, exported as JSON, or erased for good
(collector/contacts.py says what goes and what stays)."""

from __future__ import annotations

import argparse
import asyncio
import getpass
from typing import Any

import orjson

from clickedge.cli.options import CommandError, WebhookOptions, add_options, load, whole_number
from clickedge.cli.webhooks import master_secret
from collector import contacts
from collector.database import connect
from common.limits import MAX_CONTACT


def _contact(raw: str) -> int:
    value = whole_number(raw)
    if not 1 <= value <= MAX_CONTACT:
        raise argparse.ArgumentTypeError(f"a contact id is from 1 to {MAX_CONTACT}")
    return value


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser("contacts", help="export or erase everything stored about a contact")
    actions = p.add_subparsers(dest="action", required=True, metavar="ACTION")
    export = actions.add_parser("export", help="print everything stored about a contact, as JSON")
    erase = actions.add_parser(
        "erase", help="remove everything stored about a contact; their later clicks are kept anonymous"
    )
    for parser in (export, erase):
        parser.add_argument("contact_id", type=_contact, metavar="ID")
        add_options(parser, WebhookOptions)
        parser.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    options = load(WebhookOptions, args)
    master = master_secret(options)
    if master is None:
        raise CommandError(
            "the collector's master secret is not here (CLICKEDGE_WEBHOOK_SECRET or DATA_DIR/webhook.secret): "
            "erased contacts' tombstones are keyed with it"
        )
    result = asyncio.run(_run(options.dsn(), contacts.tombstone_key(master), args.action, args.contact_id))
    print(orjson.dumps(result, option=orjson.OPT_INDENT_2).decode())
    return 0


async def _run(dsn: str, key: bytes, action: str, contact_id: int) -> dict[str, Any]:
    conn = await connect(dsn)
    try:
        if action == "export":
            return await contacts.export(conn, key, contact_id)
        erased = await contacts.erase(conn, key, contact_id, f"cli:{getpass.getuser()}")
        return erased.as_json()
    finally:
        await conn.close()
