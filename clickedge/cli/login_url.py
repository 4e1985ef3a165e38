"""`clickedge login-url`: print a one-time URL that signs a browser in to the report pages, the way notebook
servers print theirs. It is valid for 10 minutes and spent on first use."""

from __future__ import annotations

import argparse
import asyncio
import sys

from clickedge.cli.options import CommandError, LoginOptions, add_options, load
from clickedge.stack import sign_in_url
from collector import sessions


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser("login-url", help="print a one-time sign-in URL for the report pages (/ui/)")
    p.add_argument("--next", metavar="PATH", help="the page to land on (default: the campaign list, /ui/)")
    p.add_argument(
        "--scope",
        choices=["read", "write"],
        default="write",
        help="what the session may do: read (look) or write (also change tracking, actions, blocks)",
    )
    add_options(p, LoginOptions)
    p.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    options = load(LoginOptions, args)
    try:
        url = asyncio.run(sign_in_url(options.dsn(), options.browser_url(), args.next, args.scope))
    except sessions.SignInError as exc:
        raise CommandError(str(exc)) from None
    print(url)
    print("Open it within 10 minutes; it works once.", file=sys.stderr)
    return 0
