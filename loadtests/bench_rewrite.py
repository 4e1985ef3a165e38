"""Rewriting throughput: one recipient's 20-link message, per second, on one core.

The campaign's message is prepared once (tokenized, links found); each recipient then costs one mint per
link and a join. Also measured, for comparison, preparing the message again for every recipient.

    .venv/bin/python -m loadtests.bench_rewrite [--recipients 20000] [--json out.json]
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time

from links.rewrite import prepare
from links.token import TokenCodec
from loadtests.report import write_json

LINK = (
    '<td style="padding:8px"><a href="https://shop.example.com/products/{n}?utm_source=news&amp;utm_medium=email'
    '&amp;utm_campaign=bf26" style="color:#1a73e8">Product {n}</a></td>\n'
)


def message(links: int = 20) -> str:
    rows = "".join(f"<tr>{LINK.format(n=n)}</tr>" for n in range(links))
    return (
        "<!doctype html><html><head><style>td{font-family:Arial}</style></head><body>"
        '<!--[if mso]><table role="presentation"><tr><td><![endif]-->'
        f'<table role="presentation" width="600">{rows}</table>'
        '<p><a href="mailto:support@example.com">Support</a> · <a href="{{unsubscribe_url}}">Unsubscribe</a></p>'
        "<!--[if mso]></td></tr></table><![endif]--></body></html>"
    )


def run(recipients: int, repeats: int = 5) -> dict[str, float]:
    codec = TokenCodec({1: os.urandom(32)}, 1)
    html = message()
    prepared = prepare(html)
    assert len(prepared.links) == 20
    sent_at = int(time.time())

    def per_recipient(prepare_each: bool, n: int) -> float:
        started = time.perf_counter()
        for contact in range(1, n + 1):
            msg = prepare(html) if prepare_each else prepared
            msg.render(codec, base_url="https://t.example.com", campaign_id=7, contact_id=contact, sent_at=sent_at)
        return n / (time.perf_counter() - started)

    prepared_rates = [per_recipient(False, recipients) for _ in range(repeats)]
    naive_rates = [per_recipient(True, max(1, recipients // 10)) for _ in range(repeats)]
    return {
        "links_per_message": 20,
        "message_bytes": len(html),
        "prepared_messages_per_second": statistics.median(prepared_rates),
        "prepare_each_time_messages_per_second": statistics.median(naive_rates),
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--recipients", type=int, default=20_000)
    parser.add_argument("--json", default=None, help="also write the result here")
    args = parser.parse_args()
    result = run(args.recipients)
    for key, value in result.items():
        print(f"{key:<40} {value:,.0f}")
    write_json(args.json, result)
    return 0


if __name__ == "__main__":
    sys.exit(main())
