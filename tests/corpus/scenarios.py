"""A labelled corpus of clicks on tracked links: people's and machines', built from documented patterns.

Each scenario makes the clicks of many messages, one contact per message, each click labelled with who
really made it. The patterns and their numbers come from public sources, cited per scenario; where a
source leaves a value open (which headers a sandbox's headless Chrome sends, say) the scenario takes both
branches, so the corpus does not flatter the classifier. Deterministic: one seed, the same clicks every run.

Times are seconds after the send. Agents name browser versions relative to the click's date (``agent``):
people's browsers are current, the sandboxes' nine versions old (fleetdm #26976 saw Chrome 125 when 133
was current). Addresses are data only (nothing is sent to them): people come from the
documentation and carrier-grade NAT ranges, scanners from the default scanner network list or from
cloud ranges it leaves out.
"""

from __future__ import annotations

import math
import random
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field

from collector import agents
from collector.classify import Verdict

WINDOWS = "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) "
CHROME = WINDOWS + "Chrome/{chrome}.0.0.0 Safari/537.36"
CHROME_MAC = (
    "Mozilla/5.0 (Macintosh; Intel Mac OS X 10_15_7) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/{chrome}.0.0.0 "
    "Safari/537.36"
)
CHROME_OLD = WINDOWS + "Chrome/{chrome_old}.0.0.0 Safari/537.36"
FIREFOX = "Mozilla/5.0 (Windows NT 10.0; Win64; x64; rv:{firefox}.0) Gecko/20100101 Firefox/{firefox}.0"
SAFARI_IOS = (
    "Mozilla/5.0 (iPhone; CPU iPhone OS 17_5 like Mac OS X) AppleWebKit/605.1.15 (KHTML, like Gecko) "
    "Version/17.5 Mobile/15E148 Safari/604.1"
)
SAFARI_IOS_15 = (
    "Mozilla/5.0 (iPhone; CPU iPhone OS 15_7 like Mac OS X) AppleWebKit/605.1.15 (KHTML, like Gecko) "
    "Version/15.6 Mobile/15E148 Safari/604.1"
)
CHROME_ANDROID = (
    "Mozilla/5.0 (Linux; Android 10; K) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/{chrome}.0.0.0 "
    "Mobile Safari/537.36"
)
ACCEPT_HTML = "text/html,application/xhtml+xml,application/xml;q=0.9,image/avif,image/webp,*/*;q=0.8"

# Request headers as browsers send them on a navigation (MDN: Sec-Fetch-*, Accept default values,
# Upgrade-Insecure-Requests, Sec-CH-UA; Safari sends Sec-Fetch-* from 16.4 on and never Sec-Fetch-User).
CHROME_NAV = {
    "Accept": ACCEPT_HTML,
    "Accept-Language": "en-US,en;q=0.9",
    "Sec-Fetch-Site": "cross-site",
    "Sec-Fetch-Mode": "navigate",
    "Sec-Fetch-Dest": "document",
    "Sec-Fetch-User": "?1",
    "Sec-CH-UA": '"Chromium";v="131", "Google Chrome";v="131"',
    "Upgrade-Insecure-Requests": "1",
}
FIREFOX_NAV = {k: v for k, v in CHROME_NAV.items() if k != "Sec-CH-UA"}
SAFARI_NAV = {k: v for k, v in CHROME_NAV.items() if k not in ("Sec-CH-UA", "Sec-Fetch-User")}
SAFARI_15_NAV = {"Accept": ACCEPT_HTML, "Accept-Language": "en-GB,en;q=0.9"}
# A headless Chrome opening a URL sends a navigation's headers; whether it sends Sec-Fetch-User depends on
# how it is driven, which no vendor documents: both are in the corpus.
HEADLESS_NAV = {k: v for k, v in CHROME_NAV.items() if k != "Sec-Fetch-User"}
HEADLESS_NAV_USER = dict(CHROME_NAV)
# Fetchers that are not browsers (curl's defaults; the gateways' probes seen in issue logs).
BARE = {"Accept": "*/*"}


def agent(template: str, at: float) -> str:
    """A user agent of the corpus as it reads at Unix time ``at``."""
    chrome = agents.current_version("Chrome", at)
    return template.format(chrome=chrome - 1, chrome_old=chrome - 9, firefox=agents.current_version("Firefox", at) - 1)


@dataclass(frozen=True, slots=True)
class Labelled:
    """One click and who made it."""

    scenario: str
    label: Verdict
    message: int  # one message, one contact
    link: int  # 1..links; DECOY_LINK for the decoy
    at: float  # seconds after the send
    ip: str
    user_agent: str  # a template for ``agent``
    method: str = "GET"
    headers: dict[str, str] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class Scenario:
    name: str
    source: str  # where the pattern is documented
    links: int  # links per message
    decoy: bool
    clicks: tuple[Labelled, ...]


DECOY_LINK = 99
EOP = ("40.92.", "40.107.", "52.101.", "104.47.")  # Microsoft's mail-filtering ranges (the default list)
AZURE = ("20.42.", "52.168.", "13.64.")  # Microsoft cloud ranges the default list leaves out on purpose


def _person_ip(rng: random.Random) -> str:
    if rng.random() < 0.5:
        return f"100.{rng.randint(64, 127)}.{rng.randint(0, 255)}.{rng.randint(1, 254)}"  # carrier-grade NAT
    return f"2001:db8:{rng.randint(0, 0xFFFF):x}:{rng.randint(0, 0xFFFF):x}::{rng.randint(1, 0xFFFF):x}"


def _ip(rng: random.Random, prefixes: tuple[str, ...]) -> str:
    return f"{rng.choice(prefixes)}{rng.randint(0, 255)}.{rng.randint(1, 254)}"


def _person_delay(rng: random.Random) -> float:
    """Seconds from send to a person's first click: about a third within an hour and four in five within a
    day (shared/FIELD.md, from peers' published click-delay distributions): log-normal, median about 3 h."""
    return min(math.exp(rng.gauss(9.28, 2.48)), 20 * 86400.0)  # the corpus spans 25 days up to now


def _scan_start(rng: random.Random) -> float:
    """Seconds from send to a gateway's scan: craft-campaign #546, 836 scanner clusters: 0.5 % within 10 s,
    2.2 % 10-20 s, 66 % 20-60 s, 28 % 1-5 min, 3 % later; median 43 s."""
    r = rng.random()
    if r < 0.005:
        return rng.uniform(1, 10)
    if r < 0.027:
        return rng.uniform(10, 20)
    if r < 0.687:
        return rng.uniform(20, 60)
    if r < 0.967:
        return rng.uniform(60, 300)
    return rng.uniform(300, 3600)


PEOPLE_BROWSERS = (
    (CHROME, CHROME_NAV),
    (CHROME_MAC, CHROME_NAV),
    (FIREFOX, FIREFOX_NAV),
    (SAFARI_IOS, SAFARI_NAV),
    (SAFARI_IOS_15, SAFARI_15_NAV),
    (CHROME_ANDROID, CHROME_NAV),
)


def people(rng: random.Random, messages: int) -> Iterator[Labelled]:
    """People on phones and desktops: a first click at a realistic delay; a quarter click a second link
    minutes later, a few a third; some double-click a link (the same link twice within a second, same
    address). Sources: shared/FIELD.md (delays); MDN (headers per browser)."""
    for message in range(messages):
        agent, headers = rng.choice(PEOPLE_BROWSERS)
        ip = _person_ip(rng)
        at = _person_delay(rng)
        links = rng.sample(range(1, 9), 3)
        count = 1 if rng.random() < 0.7 else 2 if rng.random() < 0.83 else 3
        for link in links[:count]:
            yield Labelled("people", "human", message, link, at, ip, agent, headers=headers)
            if rng.random() < 0.03:  # a double click
                yield Labelled(
                    "people", "human", message, link, at + rng.uniform(0.15, 0.8), ip, agent, headers=headers
                )
            at += rng.uniform(10, 600)


def safe_links_burst(rng: random.Random, messages: int) -> Iterator[Labelled]:
    """Defender for Office 365 detonating a message's links at delivery: all of them in one sub-second sweep
    (craft-campaign #546), from Microsoft's networks (Mautic #9400: 40.94.x; emdash #3298: two GETs from
    AS8075, headless Chrome, 22 s after send), with an old Chrome agent (fleetdm #26976: Chrome 125)."""
    for message in range(messages):
        start = _scan_start(rng)
        ip = _ip(rng, EOP if rng.random() < 0.6 else AZURE)
        headers = HEADLESS_NAV if rng.random() < 0.5 else HEADLESS_NAV_USER
        for link in range(1, 9):
            yield Labelled(
                "safe_links_burst",
                "scanner",
                message,
                link,
                start + rng.uniform(0, 0.9),
                ip,
                CHROME_OLD,
                headers=headers,
            )


def head_probes(rng: random.Random, messages: int) -> Iterator[Labelled]:
    """HEAD requests with no User-Agent before delivery (mysociety/fixmystreet #4543: "doesn't appear to
    send any User-Agent header"; wso2 carbon-identity-framework #6390: a HEAD before the user's redirect)."""
    for message in range(messages):
        start = _scan_start(rng)
        ip = _ip(rng, EOP)
        for link in rng.sample(range(1, 9), rng.randint(1, 3)):
            yield Labelled("head_probes", "scanner", message, link, start + rng.uniform(0, 3), ip, "", "HEAD", BARE)


def rescan_after_forward(rng: random.Random, messages: int) -> Iterator[Labelled]:
    """A forwarded message scanned again, hours later, by the next recipient's gateway (the issue; HubSpot's
    and Mailgun's bot notes): every link in about a second, from a network the default list does not have,
    with a current browser agent and bare fetch headers."""
    for message in range(messages):
        start = rng.uniform(3600, 3 * 86400)
        ip = _ip(rng, ("34.90.", "35.187."))
        for link in range(1, 9):
            yield Labelled(
                "rescan_after_forward", "scanner", message, link, start + rng.uniform(0, 1.2), ip, CHROME, headers=BARE
            )


def slow_sandbox(rng: random.Random, messages: int) -> Iterator[Labelled]:
    """A sandbox that clicks every link within about 10 seconds of opening the message, under a minute
    after delivery, from Microsoft's networks (check.live-direct-marketing.online on Safe Attachments, a
    third-party account): links about a second apart."""
    for message in range(messages):
        at = rng.uniform(15, 60)
        ip = _ip(rng, EOP)
        for link in range(1, 9):
            at += rng.uniform(0.6, 1.4)
            yield Labelled("slow_sandbox", "scanner", message, link, at, ip, CHROME_OLD, headers=HEADLESS_NAV)


PREVIEWERS = (
    ("Slackbot-LinkExpanding 1.0 (+https://api.slack.com/robots)", BARE),  # api.slack.com/robots
    ("Mozilla/5.0 (compatible; SkypeUriPreview; +https://www.skype.com)", BARE),  # Teams and Skype
    (
        # iMessage, from the person's own address (peter.upfold.org.uk, 2019)
        "Mozilla/5.0 (Macintosh; Intel Mac OS X 10_11_1) AppleWebKit/601.2.4 (KHTML, like Gecko) Version/9.0.1 "
        "Safari/601.2.4 facebookexternalhit/1.1 Facebot Twitterbot/1.0",
        BARE,
    ),
    ("WhatsApp/2.23.20.0 A", BARE),
    ("TelegramBot (like TwitterBot)", BARE),
    # Outlook.com's link preview (rickwargo.com 2015: IE 10 on Windows 8)
    ("Mozilla/5.0 (compatible; MSIE 10.0; Windows NT 6.2; WOW64; Trident/6.0)", BARE),
)


def single_link_detonation(rng: random.Random, messages: int) -> Iterator[Labelled]:
    """Defender detonating a message with one link (no burst to see): a headless Chrome navigation under a
    minute after delivery, from Microsoft's mail-filtering ranges or from Azure (emdash #3298: AS8075, 22 s
    after send; craft-campaign #546 for the delay). Half send a user-activation header, half not: no source
    says which, and with it, from Azure, nothing but the timing is left to see."""
    for message in range(messages):
        ip = _ip(rng, EOP if rng.random() < 0.6 else AZURE)
        headers = HEADLESS_NAV if rng.random() < 0.5 else HEADLESS_NAV_USER
        yield Labelled(
            "single_link_detonation", "scanner", message, 1, _scan_start(rng), ip, CHROME_OLD, headers=headers
        )


def preview_bots(rng: random.Random, messages: int) -> Iterator[Labelled]:
    """A link pasted into a chat, or shown by a mail service: the app fetches it to draw a preview
    (sources per agent in PREVIEWERS; YOURLS #2622 and #3967: WhatsApp and SMS previews counted as clicks)."""
    for message in range(messages):
        agent, headers = rng.choice(PREVIEWERS)
        ip = _person_ip(rng) if "facebookexternalhit" in agent else _ip(rng, ("3.80.", "31.13."))
        yield Labelled(
            "preview_bots", "preview", message, rng.randint(1, 8), _person_delay(rng), ip, agent, headers=headers
        )


def office_preflight(rng: random.Random, messages: int) -> Iterator[Labelled]:
    """A person clicking a link in an Office app: Office first asks with a HEAD ("Microsoft Office
    Existence Discovery", MSDN blog 2008) and a GET with an IE-compatible agent ending in ms-office, then
    the browser opens the link about a second later from the same address (webmasters.stackexchange.com
    q/71112)."""
    for message in range(messages):
        at = _person_delay(rng)
        ip = _person_ip(rng)
        link = rng.randint(1, 8)
        yield Labelled(
            "office_preflight", "preview", message, link, at, ip, "Microsoft Office Existence Discovery", "HEAD", BARE
        )
        ms_office = "Mozilla/4.0 (compatible; MSIE 7.0; Windows NT 10.0; WOW64; Trident/7.0; ms-office)"
        yield Labelled("office_preflight", "preview", message, link, at + 0.2, ip, ms_office, headers=BARE)
        yield Labelled(
            "office_preflight", "human", message, link, at + rng.uniform(0.6, 1.5), ip, CHROME, headers=CHROME_NAV
        )


def isolation_proxy(rng: random.Random, messages: int) -> Iterator[Labelled]:
    """A person whose gateway opens links in its browser isolation: the click comes from the vendor's
    network, but hours after the send and as a user's navigation (warmbly scanner-networks.txt on
    Proofpoint and Mimecast isolation; Barracuda's Link Protection)."""
    for message in range(messages):
        ip = f"209.222.82.{rng.randint(1, 254)}"  # a Barracuda range of the default list
        at = _person_delay(rng) + 120
        yield Labelled("isolation_proxy", "human", message, rng.randint(1, 8), at, ip, CHROME, headers=CHROME_NAV)


def echo_after_click(rng: random.Random, messages: int) -> Iterator[Labelled]:
    """A person's click, then the same link again about 12 seconds later from another network, a Windows
    Chrome of the same version (resend-node #901: Safe Links' time-of-click check)."""
    for message in range(messages):
        at = _person_delay(rng)
        link = rng.randint(1, 8)
        yield Labelled("echo_after_click", "human", message, link, at, _person_ip(rng), CHROME_MAC, headers=CHROME_NAV)
        echo_ip = _ip(rng, EOP if rng.random() < 0.5 else AZURE)
        yield Labelled(
            "echo_after_click", "scanner", message, link, at + rng.uniform(5, 20), echo_ip, CHROME, headers=HEADLESS_NAV
        )


SCRIPTS = (
    "curl/8.5.0",
    "python-requests/2.32.3",
    "Go-http-client/1.1",
    "Wget/1.21.4",
    "Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 (KHTML, like Gecko) HeadlessChrome/{chrome}.0.0.0 "
    "Safari/537.36",
    "Mozilla/5.0 (compatible; AhrefsBot/7.0; +http://ahrefs.com/robot/)",
)


def scripted_crawlers(rng: random.Random, messages: int) -> Iterator[Labelled]:
    """Scripts and crawlers that found a tracked link (crawlerdetect's fixtures; Shlink and Dub drop them by
    agent): one or a few links at any time."""
    for message in range(messages):
        agent = rng.choice(SCRIPTS)
        ip = _ip(rng, ("45.33.", "198.199."))
        at = rng.uniform(60, 7 * 86400)
        for link in rng.sample(range(1, 9), rng.randint(1, 2)):
            yield Labelled("scripted_crawlers", "script", message, link, at, ip, agent, headers=BARE)
            at += rng.uniform(5, 120)


def decoy_scan(rng: random.Random, messages: int) -> Iterator[Labelled]:
    """A scanner walking a message's links slowly, a few seconds apart, in document order, so the hidden
    decoy link (first in the body) first (Spotler: a hidden link marks a bot "with 100 % certainty"; Mautic
    #9798: an invisible link removed about 90 % of bot clicks)."""
    for message in range(messages):
        at = _scan_start(rng)
        ip = _ip(rng, AZURE)
        for link in [DECOY_LINK, *range(1, 9)]:
            at += rng.uniform(1.5, 4)
            yield Labelled("decoy_scan", "scanner", message, link, at, ip, CHROME, headers=HEADLESS_NAV_USER)


def _scenario(
    name: str, make: Callable[[random.Random, int], Iterator[Labelled]], messages: int, decoy: bool
) -> Scenario:
    rng = random.Random(f"clickedge-corpus-{name}")
    doc = (make.__doc__ or "").strip()
    return Scenario(name, " ".join(doc.split()), 8, decoy, tuple(make(rng, messages)))


def corpus(scale: int = 1) -> tuple[Scenario, ...]:
    """Every scenario; ``scale`` multiplies the messages."""
    return (
        _scenario("people", people, 600 * scale, False),
        _scenario("safe_links_burst", safe_links_burst, 80 * scale, False),
        _scenario("head_probes", head_probes, 60 * scale, False),
        _scenario("rescan_after_forward", rescan_after_forward, 40 * scale, False),
        _scenario("slow_sandbox", slow_sandbox, 40 * scale, False),
        _scenario("single_link_detonation", single_link_detonation, 40 * scale, False),
        _scenario("preview_bots", preview_bots, 80 * scale, False),
        _scenario("office_preflight", office_preflight, 60 * scale, False),
        _scenario("isolation_proxy", isolation_proxy, 60 * scale, False),
        _scenario("echo_after_click", echo_after_click, 60 * scale, False),
        _scenario("scripted_crawlers", scripted_crawlers, 60 * scale, False),
        _scenario("decoy_scan", decoy_scan, 40 * scale, True),
    )
