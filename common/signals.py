"""The request headers that tell a browser's navigation from a fetcher's, as one integer per click.

The edge records, for every click, which of these headers came and the few values that matter, in the low
24 bits of ``signals``; bits 24 to 30 say which layout they follow (this module's LAYOUT), so that a later
edge may record more and the collector still reads older clicks right. It fits PostgreSQL's integer.
Pure: no framework imports.

A browser navigating to a link (a person clicking) sends ``Sec-Fetch-Mode: navigate``, ``Sec-Fetch-Dest:
document``, an ``Accept`` that asks for HTML and an ``Accept-Language``; Chromium adds ``Sec-CH-UA`` and,
for a click, ``Sec-Fetch-User: ?1``. Browsers send the ``Sec-Fetch-*`` headers only over HTTPS, and
Safari only since 16.4, so an absent header is weak evidence; a prefetch (``Sec-Purpose`` or ``Purpose``
saying ``prefetch``) is never a click. No single bit decides a verdict: the collector's classifier weighs
them with the method, the agent, the network and the timing.
"""

from __future__ import annotations

from collections.abc import Callable

LAYOUT = 1
LAYOUT_SHIFT = 24
MAX_SIGNALS = 2**31 - 1  # what the wire and the clicks.signals column (integer) take

ACCEPT_HTML = 1 << 0  # Accept names text/html (a document, not an image or */* alone)
ACCEPT_LANGUAGE = 1 << 1  # Accept-Language came
FETCH_MODE_NAVIGATE = 1 << 2  # Sec-Fetch-Mode: navigate
FETCH_DEST_DOCUMENT = 1 << 3  # Sec-Fetch-Dest: document
FETCH_USER = 1 << 4  # Sec-Fetch-User: ?1 (a user activation, in Chromium and Firefox)
FETCH_SITE = 1 << 5  # Sec-Fetch-Site came (any value)
CLIENT_HINTS = 1 << 6  # Sec-CH-UA came (Chromium)
PREFETCH = 1 << 7  # Sec-Purpose or Purpose says prefetch: a browser fetching ahead, never a click
NATIVE_HOST = 1 << 8  # X-Native-Host came (seen from Office apps; undocumented, a hint only)
UPGRADE_INSECURE = 1 << 9  # Upgrade-Insecure-Requests: 1 (browsers' navigations)
REFERER = 1 << 10  # Referer came (webmail pages, some scanners)
COOKIE = 1 << 11  # Cookie came (a browser with state; scanners and previews rarely carry any)

NAMES = {
    ACCEPT_HTML: "accept-html",
    ACCEPT_LANGUAGE: "accept-language",
    FETCH_MODE_NAVIGATE: "fetch-navigate",
    FETCH_DEST_DOCUMENT: "fetch-document",
    FETCH_USER: "fetch-user",
    FETCH_SITE: "fetch-site",
    CLIENT_HINTS: "client-hints",
    PREFETCH: "prefetch",
    NATIVE_HOST: "native-host",
    UPGRADE_INSECURE: "upgrade-insecure",
    REFERER: "referer",
    COOKIE: "cookie",
}


HEADER_NAMES = (
    "Accept",
    "Accept-Language",
    "Sec-Fetch-Site",
    "Sec-Fetch-Mode",
    "Sec-Fetch-Dest",
    "Sec-Fetch-User",
    "Sec-CH-UA",
    "Sec-Purpose",
    "Purpose",
    "X-Native-Host",
    "Upgrade-Insecure-Requests",
    "Referer",
    "Cookie",
)


def reader(name: Callable[[str], str] = str) -> Callable[[Callable[[str], str | None]], int]:
    """A function giving one request's signals from ``get``, which looks a header up by name
    (case-insensitively, as aiohttp's headers do). ``name`` makes each header name once, ahead of every
    request: the edge passes multidict's ``istr``, whose lookups skip folding the name's case again (half
    the cost). Cheap either way: a dozen lookups, most of them missing for anything but a browser."""
    accept, language, site, mode, dest, user, hints, sec_purpose, purpose, native, upgrade, referer, cookie = (
        name(n) for n in HEADER_NAMES
    )

    def header_signals(get: Callable[[str], str | None]) -> int:
        bits = LAYOUT << LAYOUT_SHIFT
        value = get(accept)
        if value is not None and "text/html" in value:
            bits |= ACCEPT_HTML
        if get(language) is not None:
            bits |= ACCEPT_LANGUAGE
        if get(site) is not None:  # browsers send the Sec-Fetch-* headers together
            bits |= FETCH_SITE
            if get(mode) == "navigate":
                bits |= FETCH_MODE_NAVIGATE
            if get(dest) == "document":
                bits |= FETCH_DEST_DOCUMENT
            if get(user) == "?1":
                bits |= FETCH_USER
        if get(hints) is not None:
            bits |= CLIENT_HINTS
        value = get(sec_purpose) or get(purpose)
        if value is not None and "prefetch" in value:
            bits |= PREFETCH
        if get(native) is not None:
            bits |= NATIVE_HOST
        if get(upgrade) == "1":
            bits |= UPGRADE_INSECURE
        if get(referer) is not None:
            bits |= REFERER
        if get(cookie) is not None:
            bits |= COOKIE
        return bits

    return header_signals


header_signals = reader()


def layout(signals: int) -> int:
    return signals >> LAYOUT_SHIFT


def describe(signals: int) -> list[str]:
    """The names of the signals set, in bit order (for reasons, logs and the docs)."""
    if layout(signals) != LAYOUT:
        return [f"layout-{layout(signals)}"]
    return [name for bit, name in NAMES.items() if signals & bit]
