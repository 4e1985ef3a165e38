"""`clickedge block` and `clickedge unblock`: the kill switch (collector/blocks.py). A block reaches every
edge within CLICKEDGE_BLOCKLIST_POLL seconds (5), links already in inboxes included."""

from __future__ import annotations

import argparse
import asyncio
import getpass
import sys
from typing import Any

import orjson

from clickedge.cli.options import CommandError, DatabaseOptions, add_options, load, whole_number
from collector import blocks
from collector.database import connect


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    block = sub.add_parser("block", help="stop a campaign's, a link's or a destination host's links on every edge")
    _target(block)
    block.add_argument("--reason", help="why (audited with who and when); required to block")
    block.add_argument("--list", action="store_true", help="print the active blocks instead")
    block.add_argument("--lifted", action="store_true", help="with --list: the lifted blocks too")
    add_options(block, DatabaseOptions)
    block.set_defaults(run=run_block)
    unblock = sub.add_parser("unblock", help="lift a block (audited)")
    _target(unblock)
    add_options(unblock, DatabaseOptions)
    unblock.set_defaults(run=run_unblock)


def _target(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--campaign", type=whole_number, help="a campaign's links")
    parser.add_argument("--link", type=whole_number, help="with --campaign: that link only")
    parser.add_argument("--destination-host", help="every link to this host and the hosts under it")


def _parse_target(args: argparse.Namespace) -> blocks.Target:
    if args.link is not None and args.campaign is None:
        raise CommandError("--link goes with --campaign")
    try:
        return blocks.Target.parse(args.campaign, args.link, args.destination_host)
    except blocks.BlockError as exc:
        raise CommandError(
            str(exc).replace("campaign_id", "--campaign").replace("destination_host", "--destination-host")
        ) from None


def run_block(args: argparse.Namespace) -> int:
    options = load(DatabaseOptions, args)
    if args.list:
        listed = asyncio.run(_with(options.dsn(), lambda conn: blocks.list_blocks(conn, lifted=args.lifted)))
        print(orjson.dumps(listed, option=orjson.OPT_INDENT_2).decode())
        return 0
    target = _parse_target(args)
    if args.reason is None:
        raise CommandError("--reason is required: say why (it is audited)")
    try:
        made, new = asyncio.run(
            _with(options.dsn(), lambda conn: blocks.block(conn, target, args.reason, f"cli:{getpass.getuser()}"))
        )
    except blocks.BlockError as exc:
        raise CommandError(str(exc)) from None
    print(orjson.dumps(made, option=orjson.OPT_INDENT_2).decode())
    if new:
        print(f"{target.describe()} is blocked: every edge answers its links 410 within seconds", file=sys.stderr)
    else:
        print(f"{target.describe()} was blocked already (block {made['id']}); nothing changed", file=sys.stderr)
    return 0


def run_unblock(args: argparse.Namespace) -> int:
    options = load(DatabaseOptions, args)
    target = _parse_target(args)
    try:
        lifted = asyncio.run(
            _with(options.dsn(), lambda conn: blocks.unblock(conn, target, f"cli:{getpass.getuser()}"))
        )
    except blocks.BlockError as exc:
        raise CommandError(str(exc)) from None
    print(orjson.dumps(lifted, option=orjson.OPT_INDENT_2).decode())
    return 0


async def _with(dsn: str, work: Any) -> Any:
    conn = await connect(dsn)
    try:
        return await work(conn)
    finally:
        await conn.close()
