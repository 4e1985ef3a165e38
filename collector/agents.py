"""What a user agent says about its client: a link preview, a script, an Office preflight, a mail client, or
nothing. Pure; cached per distinct agent (a classifier sees the same few hundred agents all day).

Three sources, in this order:

- **Our own lists** (below), each entry with the public source it comes from. They win over the library.
- **A guard** for mail and chat clients that the library calls crawlers (Outlook, Apple Mail, Thunderbird,
  the Slack desktop app): people click through them. Their matches are reported as ``mail_client``, which
  decides nothing on its own.
- **crawlerdetect** (the Python port of JayBizzle/Crawler-Detect, about 1,460 patterns): anything else it
  matches is a ``known_bot``. It costs about 300 µs for an agent it has not seen, hence the cache.

A browser's agent says nothing here: Safe Links, Mimecast and Proofpoint fetch with ordinary browser agents
(docs/click-truth.md), so timing, bursts and networks have to tell them apart.
"""

from __future__ import annotations

import re
from functools import lru_cache
from typing import Literal

from crawlerdetect.crawlerdetect import get_compiled_crawler_regex, get_compiled_exclusions_regex

# "browser": anything else, which proves nothing either way.
Kind = Literal["preview", "script", "office_preflight", "mail_client", "known_bot", "browser", "none"]

# Link-preview fetchers of chat and social apps: they open a link when it is pasted or shown, not clicked.
PREVIEW = re.compile(
    "|".join(
        (
            r"Slackbot",  # api.slack.com/robots: Slackbot-LinkExpanding on every shared link
            r"SkypeUriPreview",  # Teams and Skype link previews
            r"facebookexternalhit|Facebot",  # Facebook, and iMessage's preview (peter.upfold.org.uk, 2019)
            r"^WhatsApp/",  # WhatsApp's preview, fetched while a message is typed
            r"TelegramBot",
            r"Discordbot",
            r"Twitterbot",
            r"LinkedInBot",
            r"BingPreview",
            r"Google-PageRenderer|Gmail-content-sampling",  # Gmail (mssola/user_agent #71)
            r"Pinterestbot",
            r"redditbot",
            r"Embedly",
            # Outlook.com's link preview (rickwargo.com 2015; support.goarch.org): IE 10 on Windows 8, a browser
            # no person has used for a decade.
            r"MSIE 10\.0; Windows NT 6\.2; WOW64; Trident/6\.0",
        )
    ),
    re.IGNORECASE,
)
# Office asks whether a link exists before it opens the browser: a HEAD or an OPTIONS with these agents
# (MSDN blog "Microsoft Office Existence Discovery Protocol", 2008), or a GET whose IE-compatible agent ends
# in "ms-office" (webmasters.stackexchange.com q/71112), followed within a second by the browser's own GET.
OFFICE_PREFLIGHT = re.compile(
    r"Microsoft Office (Existence|Protocol) Discovery|compatible; MSIE [0-9.]+;.*ms-office", re.IGNORECASE
)
# HTTP libraries, command-line tools and headless browsers.
SCRIPT = re.compile(
    "|".join(
        (
            r"^curl/",
            r"^Wget/",
            r"python-requests|python-urllib|python-httpx|aiohttp/",
            r"Go-http-client",
            r"^Java/|Apache-HttpClient",
            r"libwww-perl",
            r"Scrapy",
            r"node-fetch|axios/|undici",
            r"HeadlessChrome",
            r"PhantomJS",
            r"HTTPie",
            r"PostmanRuntime",
        )
    ),
    re.IGNORECASE,
)
# Mail and chat clients people click from, which crawlerdetect lists as crawlers (JayBizzle/Crawler-Detect
# PR #278 added Outlook and macOS Mail on purpose; its PR #416 took the bare "ms-office" back out).
MAIL_CLIENT = re.compile(
    r"Microsoft Outlook|Microsoft Office/|Outlook-iOS|Outlook-Android|MacOutlook/|^Mail/.*CFNetwork|Thunderbird"
    r"|Electron/.*Slack/|Slack/.*Electron/",
    re.IGNORECASE,
)


@lru_cache(maxsize=4096)
def kind(user_agent: str) -> Kind:
    """What ``user_agent`` says about its client (an empty agent: ``none``)."""
    agent = user_agent.strip()
    if not agent:
        return "none"
    if OFFICE_PREFLIGHT.search(agent):
        return "office_preflight"
    if PREVIEW.search(agent):
        return "preview"
    if SCRIPT.search(agent):
        return "script"
    if MAIL_CLIENT.search(agent):
        return "mail_client"
    if _crawlerdetect(agent):
        return "known_bot"
    return "browser"


def _crawlerdetect(agent: str) -> bool:
    """crawlerdetect's verdict, read through its compiled patterns (its CrawlerDetect class keeps the last
    match on the instance, which a shared instance cannot)."""
    rest = get_compiled_exclusions_regex().sub("", agent)
    return bool(rest) and get_compiled_crawler_regex().search(rest) is not None


# Chrome and Firefox ship a major version every four weeks (Chrome 131 on 2024-11-12, Firefox 133 on
# 2024-11-26) and update themselves; Defender's sandbox was seen fetching with a Chrome eight or more
# versions old (fleetdm/fleet #26976). A browser more than STALE_VERSIONS behind the version current at the
# click is a weighing signal (people on a pinned enterprise or ESR browser trip it too, so never alone).
RELEASES = {"Chrome": (131, 1731369600), "Firefox": (133, 1732579200)}
RELEASE_SECONDS = 28 * 86400
STALE_VERSIONS = 6
VERSION = re.compile(r"\b(Chrome|Firefox)/(\d+)\.")


def current_version(browser: str, at: float) -> int:
    """The major version of ``browser`` (Chrome or Firefox) released last before Unix time ``at``."""
    major, released = RELEASES[browser]
    return major + int((at - released) // RELEASE_SECONDS)


def stale(user_agent: str, at: float) -> bool:
    """Whether the agent claims a Chrome or Firefox more than STALE_VERSIONS behind the one current at ``at``."""
    claimed = _claimed_version(user_agent)
    return claimed is not None and claimed[1] < current_version(claimed[0], at) - STALE_VERSIONS


@lru_cache(maxsize=4096)
def _claimed_version(user_agent: str) -> tuple[str, int] | None:
    match = VERSION.search(user_agent)
    return None if match is None else (match.group(1), int(match.group(2)))
