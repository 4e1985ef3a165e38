"""`clickedge mint`: print a tracked link, or (``--unsubscribe``) a recipient's one-click unsubscribe URL."""

from __future__ import annotations

import argparse
import time

from clickedge.cli.options import CommandError, LinkOptions, add_options, load, open_keys, whole_number
from links.token import LINK_PATH, UNSUBSCRIBE_PATH, DestinationError


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser("mint", help="print a tracked link for a destination, or a one-click unsubscribe URL")
    p.add_argument("destination", nargs="?", help="the http(s) URL the link redirects to (not with --unsubscribe)")
    p.add_argument("--campaign", type=whole_number, required=True, help="campaign id (0..4294967295)")
    p.add_argument("--link", type=whole_number, default=None, help="link placement id (0..4294967295)")
    p.add_argument("--contact", type=whole_number, default=None, help="contact id; omit for an anonymous link")
    p.add_argument(
        "--unsubscribe",
        action="store_true",
        help="print the contact's one-click unsubscribe URL (RFC 8058) for the campaign instead of a link; "
        "needs --contact, takes no destination or --link",
    )
    p.add_argument("--sent-at", type=whole_number, default=None, help="send time, Unix seconds (default now)")
    p.add_argument("--token-only", action="store_true", help="print only the token")
    add_options(p, LinkOptions)
    p.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    destination: str | None = args.destination
    link: int | None = args.link
    contact: int | None = args.contact
    if args.unsubscribe:
        if destination is not None or link is not None:
            raise CommandError("--unsubscribe takes no destination and no --link: it names a contact, not a link")
        if contact is None:
            raise CommandError("--unsubscribe needs --contact: the one-click URL unsubscribes one contact")
    elif destination is None or link is None:
        raise CommandError("a link needs a destination and --link (or use --unsubscribe)")
    options = load(LinkOptions, args)
    codec = open_keys(options).codec()
    sent_at = args.sent_at if args.sent_at is not None else int(time.time())
    try:
        if contact is not None and args.unsubscribe:
            token = codec.mint_unsubscribe(campaign_id=args.campaign, contact_id=contact, sent_at=sent_at)
            path = UNSUBSCRIBE_PATH
        else:
            assert destination is not None and link is not None
            token = codec.mint(
                destination, campaign_id=args.campaign, link_id=link, contact_id=contact, sent_at=sent_at
            )
            path = LINK_PATH
    except (DestinationError, ValueError) as exc:
        raise CommandError(str(exc)) from None
    print(token if args.token_only else f"{options.base_url()}{path}{token}")
    return 0
