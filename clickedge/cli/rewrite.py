"""`clickedge rewrite`: rewrite a message's links into tracked links (HTML on stdin, to stdout)."""

from __future__ import annotations

import argparse
import asyncio
import sys
import time
from pathlib import Path

from clickedge.cli.options import CommandError, RewriteOptions, add_options, load, open_keys, whole_number
from collector import campaigns, sending
from collector.database import connect
from common.limits import MAX_CONTACT, MAX_ID
from links.rewrite import PreparedMessage, RewriteError, base_url_problem, prepare


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser("rewrite", help="rewrite a message's links into tracked links (HTML on stdin)")
    p.add_argument("--campaign", type=whole_number, required=True, help="campaign id")
    p.add_argument("--contact", type=whole_number, default=None, help="the recipient's contact id (omit: anonymous)")
    p.add_argument("--text", type=Path, default=None, help="also rewrite this plain-text part; written to TEXT.tracked")
    p.add_argument("--sent-at", type=whole_number, default=None, help="send time, Unix seconds (default now)")
    p.add_argument(
        "--headers",
        type=Path,
        default=None,
        metavar="FILE",
        help="write the message's one-click unsubscribe headers (List-Unsubscribe, List-Unsubscribe-Post) to FILE, "
        "one 'Name: value' line each; needs --contact",
    )
    p.add_argument(
        "--decoy-link",
        action="store_true",
        help="add a link people cannot see or reach; a fetch of it marks the message's burst a scanner's "
        "(also on when the campaign's decoy_link setting is)",
    )
    add_options(p, RewriteOptions)
    p.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    options = load(RewriteOptions, args)
    if not 0 <= args.campaign <= MAX_ID or (args.contact is not None and not 1 <= args.contact <= MAX_CONTACT):
        raise CommandError(f"--campaign must be 0..{MAX_ID} and --contact 1..{MAX_CONTACT}")
    base = options.base_url()
    if base_url_problem(base) is not None:
        raise CommandError(f"--public-url / CLICKEDGE_PUBLIC_URL {base_url_problem(base)}")
    if args.headers is not None and args.contact is None:
        raise CommandError("--headers needs --contact: a one-click unsubscribe URL names the recipient")
    html = sys.stdin.read()
    text = args.text.read_text() if args.text else None
    try:
        message = prepare(html, text)
    except RewriteError as exc:
        raise CommandError(str(exc)) from None
    sendable = asyncio.run(_register(options, args, message, html, text, base))
    sys.stdout.write(sendable.html)
    if args.text:
        args.text.with_name(args.text.name + ".tracked").write_text(sendable.text or "")
    if args.headers is not None:
        args.headers.write_text("".join(f"{name}: {value}\n" for name, value in sendable.headers.items()))
    if sendable.tracking:
        for skipped in message.skipped:
            print(f"left alone: {skipped.href} ({skipped.reason})", file=sys.stderr)
    return 0


async def _register(
    options: RewriteOptions, args: argparse.Namespace, message: PreparedMessage, html: str, text: str | None, base: str
) -> sending.Sendable:
    """Register the campaign, its links and the recipient where there is a database, then render."""
    settings = campaigns.SendingSettings(True, None, args.decoy_link)
    dsn = options.optional_dsn()
    if dsn is None:
        print("clickedge rewrite: no database configured; links are minted but not registered", file=sys.stderr)
    else:
        conn = await connect(dsn)
        try:
            settings = await sending.register(conn, args.campaign, message, args.contact, decoy=args.decoy_link)
        except campaigns.Conflict as exc:
            raise CommandError(str(exc)) from None
        finally:
            await conn.close()
    return sending.render(
        message,
        (html, text),
        open_keys(options).codec(),
        tracking=settings.tracking,
        base=sending.base_url(settings.tracking_url, base),
        campaign_id=args.campaign,
        contact=args.contact,
        sent_at=args.sent_at if args.sent_at is not None else int(time.time()),
        decoy=settings.decoy_link,
    )
