"""Token decode + verify: the median time for a token carrying a 100-character URL, on one core.

Each sample times a run of decodes of one token with ``timeit``; the result is the median over the
samples. Alongside, in the same run and with samples interleaved: the AES-SIV open alone (the floor any
decode of this format pays), and a token of format version 1 (still verified for links already sent).

    .venv/bin/python -m loadtests.bench_decode [--cpu 1] [--url-chars 100] [--json out.json]
"""

from __future__ import annotations

import argparse
import base64
import os
import statistics
import struct
import sys
import timeit
from collections.abc import Callable

from cryptography.hazmat.primitives.ciphers.aead import AESSIV

from links.token import VERSION_1, TokenCodec
from loadtests.report import write_json

_FIELDS = struct.Struct(">IIQIB")


def _medians_us(calls: dict[str, Callable[[], object]], number: int, samples: int) -> dict[str, float]:
    """Samples of the calls interleaved, so a burst of noise on the machine lands on all of them alike."""
    times: dict[str, list[float]] = {name: [] for name in calls}
    for _ in range(samples):
        for name, call in calls.items():
            times[name].append(timeit.timeit(call, number=number) / number * 1e6)
    return {name: statistics.median(values) for name, values in times.items()}


def version_1_token(key: bytes, key_id: int, url: str) -> str:
    """A token as format version 1 minted it: the clear header bound in as associated data."""
    clear = struct.pack(">BH", VERSION_1, key_id)
    plain = _FIELDS.pack(7, 3, 42, 1_790_000_000, 1) + url.encode("ascii")
    sealed = AESSIV(key).encrypt(plain, [clear])
    return base64.urlsafe_b64encode(clear + sealed).rstrip(b"=").decode("ascii")


def run(url_chars: int = 100, number: int = 20_000, samples: int = 15) -> dict[str, float]:
    key = os.urandom(32)
    codec = TokenCodec({1: key}, 1)
    prefix = "https://shop.example.com/p?"
    url = prefix + "x" * (url_chars - len(prefix))
    token = codec.mint(url, campaign_id=7, link_id=3, contact_id=42, sent_at=1_790_000_000)
    old = version_1_token(key, 1, url)
    assert codec.decode(token).destination == url and codec.decode(old).destination == url
    sealed = base64.urlsafe_b64decode(token + "=" * (-len(token) % 4))[3:]
    cipher = AESSIV(key)
    decode = codec.decode
    calls: dict[str, Callable[[], object]] = {
        "decode_median_us": lambda: decode(token),
        "decode_version_1_median_us": lambda: decode(old),
        "aes_siv_open_median_us": lambda: cipher.decrypt(sealed, None),
    }
    return {"url_chars": len(url), "token_chars": len(token), **_medians_us(calls, number, samples)}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cpu", type=int, default=None, help="pin to this CPU (default: the last one)")
    parser.add_argument("--url-chars", type=int, default=100)
    parser.add_argument("--number", type=int, default=20_000, help="decodes per sample")
    parser.add_argument("--samples", type=int, default=15)
    parser.add_argument("--json", default=None, help="also write the result here")
    args = parser.parse_args()
    cpus = sorted(os.sched_getaffinity(0))
    cpu = cpus[-1] if args.cpu is None else args.cpu
    os.sched_setaffinity(0, {cpu})
    result = run(args.url_chars, args.number, args.samples)
    print(f"pinned to CPU {cpu}")
    for name, value in result.items():
        print(f"{name:<28} {value:,.3f}" if isinstance(value, float) else f"{name:<28} {value}")
    write_json(args.json, result)
    return 0


if __name__ == "__main__":
    sys.exit(main())
