"""The header signals the edge records per click (common/signals.py), from requests as browsers and
fetchers send them (MDN, "Sec-Fetch-Mode", "Sec-Fetch-Dest", "Sec-Fetch-User", "Sec-Purpose")."""

from __future__ import annotations

from multidict import CIMultiDict, istr

from common import signals
from common.signals import LAYOUT, LAYOUT_SHIFT, MAX_SIGNALS, describe, header_signals, layout

# A click in Chrome from a webmail page (a top-level navigation the user started).
CHROME = {
    "Accept": "text/html,application/xhtml+xml,application/xml;q=0.9,image/avif,image/webp,*/*;q=0.8",
    "Accept-Language": "en-GB,en;q=0.9",
    "Sec-Fetch-Site": "cross-site",
    "Sec-Fetch-Mode": "navigate",
    "Sec-Fetch-Dest": "document",
    "Sec-Fetch-User": "?1",
    "Sec-CH-UA": '"Chromium";v="131", "Not_A Brand";v="24"',
    "Upgrade-Insecure-Requests": "1",
    "Referer": "https://mail.example/",
}
# Safari before 16.4, and over plain HTTP any browser: no Sec-Fetch-* headers, no client hints.
SAFARI = {"Accept": "text/html,application/xhtml+xml,*/*;q=0.8", "Accept-Language": "en-gb"}


def bits(headers: dict[str, str]) -> int:
    return header_signals(CIMultiDict(headers).get)


def test_a_browser_navigation_sets_its_signals() -> None:
    assert describe(bits(CHROME)) == [
        "accept-html",
        "accept-language",
        "fetch-navigate",
        "fetch-document",
        "fetch-user",
        "fetch-site",
        "client-hints",
        "upgrade-insecure",
        "referer",
    ]
    assert describe(bits(SAFARI)) == ["accept-html", "accept-language"]


def test_a_bare_fetch_sets_none_and_says_its_layout() -> None:
    assert bits({}) == LAYOUT << LAYOUT_SHIFT and layout(bits({})) == LAYOUT
    assert describe(bits({"Accept": "*/*", "User-Agent": "python-requests/2.32"})) == []


def test_header_names_are_matched_whatever_their_case() -> None:
    assert bits({k.lower(): v for k, v in CHROME.items()}) == bits(CHROME)


def test_fetch_metadata_counts_only_with_its_values() -> None:
    fetch = {"Sec-Fetch-Site": "none", "Sec-Fetch-Mode": "no-cors", "Sec-Fetch-Dest": "image", "Sec-Fetch-User": "?0"}
    assert describe(bits(fetch)) == ["fetch-site"]  # an image fetch is no navigation


def test_a_prefetch_is_marked_in_either_spelling() -> None:
    assert signals.PREFETCH & bits({"Sec-Purpose": "prefetch;prerender"})
    assert signals.PREFETCH & bits({"Purpose": "prefetch"})  # Chrome's older header
    assert not signals.PREFETCH & bits({"Sec-Purpose": "other"})


def test_every_signal_fits_the_column_and_has_a_name() -> None:
    everything = {**CHROME, "Sec-Purpose": "prefetch", "X-Native-Host": "x", "Cookie": "a=1"}
    assert describe(bits(everything)) == list(signals.NAMES.values())
    assert bits(everything) <= MAX_SIGNALS
    assert max(signals.NAMES) < 1 << LAYOUT_SHIFT  # no signal runs into the layout's bits


def test_an_unknown_layout_is_named_not_misread() -> None:
    assert describe(5 << LAYOUT_SHIFT | 0b111) == ["layout-5"]


def test_the_edges_reader_with_prepared_names_reads_the_same() -> None:
    fast = signals.reader(istr)  # as edge/redirect.py makes it
    for headers in (CHROME, SAFARI, {}, {"sec-purpose": "prefetch", "X-NATIVE-HOST": "1"}):
        assert fast(CIMultiDict(headers).get) == bits(headers)
