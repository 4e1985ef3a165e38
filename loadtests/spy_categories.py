"""Sum py-spy's raw samples of an edge worker by part of the request path (loadtests/profile_shipping.sh).

    python -m loadtests.spy_categories /tmp/clickedge-profile/spy-shipping.txt [...]

Each sample of the event loop's thread goes to the innermost frame one of PARTS names; the worker thread's
samples count only where they read the spool for the shipper. Shares are of the event loop's samples.
"""

from __future__ import annotations

import argparse
import sys
from collections import Counter
from pathlib import Path

LOOP = "the event loop, uvloop, asyncio (waiting included)"
PARTS = (
    ("the shipper: aiohttp client, batches, acknowledgements", ("edge/shipper.py", "aiohttp/client", "Spool.ack")),
    ("the shipper: reading the spool (worker thread)", ("read_frames", "Shipper._read")),
    ("token decode and verify", ("links/token.py",)),
    ("the spool: add, and the write() per pass", ("Spool.flush", "Spool.add", "edge/durability.py")),
    (
        "the redirect handler, besides token and spool",
        ("edge/redirect.py", "edge/clientip.py", "edge/blocklist.py", "edge/metrics.py", "common/signals.py", "yarl"),
    ),
    ("writing the answers", ("_Connection.send", "_send_deferred", "_Connection._send")),
    ("HTTP parsing and the protocol", ("edge/protocol.py",)),
)


def part(frames: list[str]) -> str | None:
    for frame in reversed(frames):
        for name, marks in PARTS:
            if any(mark in frame for mark in marks):
                return name
    return None


def shares(path: Path) -> tuple[int, Counter[str]]:
    counts: Counter[str] = Counter()
    loop_samples = 0
    for line in path.read_text().splitlines():
        if not line.strip():
            continue
        stack, n = line.rsplit(" ", 1)
        on_loop = "MainThread" in stack
        loop_samples += int(n) if on_loop else 0
        name = part(stack.split(";")) or (LOOP if on_loop else None)
        if name is not None:
            counts[name] += int(n)
    return loop_samples, counts


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("files", nargs="+", type=Path, help="py-spy record --format raw output")
    for arg in parser.parse_args().files:
        total, counts = shares(arg)
        print(f"{arg}: {total} samples of the event loop's thread")
        for name, n in counts.most_common():
            print(f"  {100 * n / max(total, 1):5.1f} %  {name}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
