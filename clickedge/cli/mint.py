"""`clickedge mint`: print a tracked link."""

from __future__ import annotations

import argparse
import time

from clickedge.cli.options import CommandError, LinkOptions, add_options, load, open_keys, whole_number
from links.token import LINK_PATH, DestinationError


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser("mint", help="print a tracked link for a destination")
    p.add_argument("destination", help="the http(s) URL the link redirects to")
    p.add_argument("--campaign", type=whole_number, required=True, help="campaign id (0..4294967295)")
    p.add_argument("--link", type=whole_number, required=True, help="link placement id (0..4294967295)")
    p.add_argument("--contact", type=whole_number, default=None, help="contact id; omit for an anonymous link")
    p.add_argument("--sent-at", type=whole_number, default=None, help="send time, Unix seconds (default now)")
    p.add_argument("--token-only", action="store_true", help="print only the token")
    add_options(p, LinkOptions)
    p.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    options = load(LinkOptions, args)
    codec = open_keys(options).codec()
    try:
        token = codec.mint(
            args.destination,
            campaign_id=args.campaign,
            link_id=args.link,
            contact_id=args.contact,
            sent_at=args.sent_at if args.sent_at is not None else int(time.time()),
        )
    except (DestinationError, ValueError) as exc:
        raise CommandError(str(exc)) from None
    print(token if args.token_only else f"{options.base_url()}{LINK_PATH}{token}")
    return 0
