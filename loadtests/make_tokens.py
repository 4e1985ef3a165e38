"""Write distinct valid tracked-link paths (one per line) for wrk's clicks.lua.

Each path is a distinct contact x link, so every answered click is a distinct row in PostgreSQL.
Usage: python loadtests/make_tokens.py --data-dir .clickedge --count 100000 > loadtests/tokens.txt
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

from edge import keys
from edge.server import TOKEN_PREFIX


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data-dir", type=Path, default=Path(".clickedge"))
    parser.add_argument("--count", type=int, default=100_000)
    parser.add_argument("--campaign", type=int, default=900_001)
    parser.add_argument("--links", type=int, default=20, help="link placements per contact")
    args = parser.parse_args()
    codec = keys.load(args.data_dir / "keys.json").codec()
    sent_at = int(time.time())
    out = sys.stdout
    for i in range(args.count):
        contact, link = divmod(i, args.links)
        url = f"https://shop.example.com/products/item-{link}?utm_source=newsletter&utm_campaign=load#c{contact}"
        token = codec.mint(url, campaign_id=args.campaign, link_id=link, contact_id=contact + 1, sent_at=sent_at)
        out.write(f"{TOKEN_PREFIX}{token}\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
