"""`clickedge decode`: what a tracked link holds, or why it is not valid (exit 1)."""

from __future__ import annotations

import argparse
import base64
from datetime import UTC, datetime

from clickedge.cli.options import KeyOptions, add_options, load, open_keys
from links.token import LINK_PATH, Link, TokenError


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser("decode", help="show what a tracked link or token holds, and whether it is valid")
    p.add_argument("link", help="a tracked URL or a bare token")
    add_options(p, KeyOptions)
    p.set_defaults(run=run)


def token_of(text: str) -> str:
    """The token in a tracked URL (or the text itself, a bare token)."""
    text = text.strip()
    if "://" in text:
        path = "/" + text.split("://", 1)[1].partition("/")[2]
        text = path[len(LINK_PATH) :] if path.startswith(LINK_PATH) else path[1:]
        text = text.partition("?")[0].partition("#")[0]
    return text


def run(args: argparse.Namespace) -> int:
    ring = open_keys(load(KeyOptions, args))
    token = token_of(args.link)
    try:
        link = ring.codec().decode(token)
    except TokenError as exc:
        print(f"NOT VALID ({exc.kind}): {exc.reason}")
        if exc.kind == "invalid" and "retired" not in exc.reason:
            print(
                "A link minted with a key this data dir does not hold also shows this; "
                f"keys here: {', '.join(f'{k.id} ({k.state})' for k in ring.keys) or 'none'}"
            )
        return 1
    print("VALID")
    for name, value in describe(link, token, ring.get(link.key_id).state):
        print(f"  {name:<12} {value}")
    return 0


def describe(link: Link, token: str, key_state: str) -> list[tuple[str, object]]:
    sent = datetime.fromtimestamp(link.sent_at, UTC).isoformat()
    return [
        ("destination", link.destination),
        ("campaign", link.campaign_id),
        ("link", link.link_id),
        ("contact", link.contact_id if link.contact_id is not None else "none (anonymous)"),
        ("sent at", f"{sent} ({link.sent_at})"),
        ("key", f"{link.key_id} ({key_state})"),
        # Verified, so its first four characters are base64url whose first byte is the version.
        ("format", f"version {base64.urlsafe_b64decode(token[:4])[0]}, {len(token)} characters"),
    ]
