"""Write distinct valid tracked-link paths (one per line) for wrk's clicks.lua.

Each path is a distinct contact x link, so every answered click is a distinct row in PostgreSQL.
Usage: python loadtests/make_tokens.py --data-dir .clickedge --count 100000 > loadtests/tokens.txt
"""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Iterator
from pathlib import Path

from links import keys
from links.token import LINK_PATH, TokenCodec


def token_paths(codec: TokenCodec, campaign: int, count: int, links: int = 20, sent_at: int = 0) -> Iterator[str]:
    """``count`` tracked-link paths, each a distinct contact x link, for destinations of about 100 characters."""
    for i in range(count):
        contact, link = divmod(i, links)
        url = f"https://shop.example.com/products/item-{link}?utm_source=newsletter&utm_campaign=load&c={contact}"
        token = codec.mint(url[:100], campaign_id=campaign, link_id=link, contact_id=contact + 1, sent_at=sent_at)
        yield f"{LINK_PATH}{token}\n"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data-dir", type=Path, default=Path(".clickedge"))
    parser.add_argument("--count", type=int, default=100_000)
    parser.add_argument("--campaign", type=int, default=900_001)
    parser.add_argument("--links", type=int, default=20, help="link placements per contact")
    args = parser.parse_args()
    codec = keys.load(args.data_dir / "keys.json").codec()
    sys.stdout.writelines(token_paths(codec, args.campaign, args.count, args.links, int(time.time())))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
