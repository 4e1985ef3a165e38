"""Link rewriting for senders: every clickable http(s) link in a message becomes a tracked link. Pure.

``prepare`` reads a campaign's message once, with the standard library's HTML tokenizer, and finds each
link placement: ``href`` on ``<a>``, ``<area>`` and Outlook VML elements (``<v:roundrect>`` and friends),
including those inside Outlook conditional comments (``<!--[if mso]> … <![endif]-->``), and URLs in the
plain-text part. ``PreparedMessage.render`` then mints one recipient's links and splices them in; every
byte outside the rewritten attribute values stays as it was.

Left alone: ``mailto:``, ``tel:``, ``sms:`` and other schemes, in-page anchors, relative URLs, template
placeholders (``{{…}}``, ``*|…|*``, ``%%…%%``, ``[[…]]``, ``<%…%>``, ``${…}``, ``{$…}``), and links marked
``data-clickedge="off"`` (that attribute is removed). Character references in ``href`` (``&amp;``) are
decoded before minting. ``data-clickedge-name="Pricing_CTA"`` names a placement for reports.

A decoy link (``render(..., decoy=True)``, for campaigns that ask for one) is one more placement that
people cannot see or reach: an empty ``<a>`` right after ``<body>`` (or at the start of a document without
one), hidden from view (``display:none``, and ``mso-hide:all`` for Outlook), from screen readers
(``aria-hidden``) and from keyboard focus (``tabindex="-1"``). Only machines fetch it. Without it, a
rendered message differs from the original only in the rewritten values.
"""

from __future__ import annotations

import html
import html.entities
import re
from dataclasses import dataclass, field
from html.parser import HTMLParser
from typing import Protocol

from links.token import LINK_PATH, DestinationError, validate_destination

PLACEHOLDER_MARKS = ("{{", "}}", "{%", "%%", "*|", "|*", "[[", "]]", "<%", "${", "{$")
TEXT_URL = re.compile(r"https?://[^\s<>\"'`]+", re.IGNORECASE)  # plain text has no markup to tokenize
TEXT_TRAILING = ".,;:!?)]}'\""
DECOY_OPEN = '<a href="'
DECOY_CLOSE = '" style="display:none!important;mso-hide:all" aria-hidden="true" tabindex="-1"></a>'
DECOY_NAME = "decoy"
OFF_ATTRIBUTE = "data-clickedge"
NAME_ATTRIBUTE = "data-clickedge-name"


_LABEL = r"[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?"
# What may go before /c/<token> in a link written into a message: a scheme, a host of letters, digits,
# hyphens and dots, a port, and a path of unreserved characters. Nothing that means something in HTML
# (quotes, <, >, &) or ends a URL's path (?, #).
_BASE_URL = re.compile(rf"https?://(?:{_LABEL}\.)*{_LABEL}(?::[0-9]{{1,5}})?(?:/[A-Za-z0-9._~-]+)*/?")
BASE_URL_RULE = (
    "must be http:// or https://, a host name (letters, digits, hyphens, dots), an optional port and "
    "an optional path of letters, digits and . _ ~ - (no query, fragment, user or quotes), at most 200 characters"
)


def base_url_problem(url: object) -> str | None:
    """None if ``url`` may be the base of tracked links, else what is wrong with it."""
    if not isinstance(url, str) or len(url) > 200 or not _BASE_URL.fullmatch(url):
        return BASE_URL_RULE
    return None


class RewriteError(ValueError):
    """A message that cannot be rewritten as given (the HTML tokenizer gave up on it)."""


class Minter(Protocol):
    def mint(
        self, destination: str, *, campaign_id: int, link_id: int, contact_id: int | None, sent_at: int
    ) -> str: ...


@dataclass(frozen=True, slots=True)
class LinkSlot:
    link_id: int  # the placement: 1, 2, … in document order, then the plain-text part
    destination: str
    name: str
    part: str  # "html" or "text"


@dataclass(frozen=True, slots=True)
class Skipped:
    href: str
    reason: str


@dataclass
class _Part:
    chunks: list[str] = field(default_factory=list)  # literal text around the slots: len(slots) + 1
    slots: list[LinkSlot] = field(default_factory=list)

    def render(self, urls: dict[int, str]) -> str:
        out = [self.chunks[0]]
        for slot, chunk in zip(self.slots, self.chunks[1:], strict=True):
            out.append(urls[slot.link_id])
            out.append(chunk)
        return "".join(out)


@dataclass
class PreparedMessage:
    html: _Part
    text: _Part | None
    skipped: list[Skipped]
    decoy_at: tuple[int, int] = (0, 0)  # where a decoy link goes: (chunk of html, offset in it)

    @property
    def links(self) -> list[LinkSlot]:
        return self.html.slots + (self.text.slots if self.text else [])

    @property
    def decoy(self) -> LinkSlot | None:
        """The decoy placement: after every other one, to the first link's destination; None for a message
        without links (nothing to protect)."""
        links = self.links
        if not links:
            return None
        return LinkSlot(max(s.link_id for s in links) + 1, links[0].destination, DECOY_NAME, "decoy")

    def render(
        self,
        minter: Minter,
        *,
        base_url: str,
        campaign_id: int,
        contact_id: int | None,
        sent_at: int,
        decoy: bool = False,
    ) -> tuple[str, str | None]:
        """One recipient's message: each placement's tracked URL, minted locally, and the decoy link if
        ``decoy`` (and the message has links)."""
        problem = base_url_problem(base_url)
        if problem is not None:
            raise RewriteError(f"the base URL of tracked links {problem}")
        prefix = base_url.rstrip("/") + LINK_PATH
        decoy_slot = self.decoy if decoy else None
        slots = self.links if decoy_slot is None else [*self.links, decoy_slot]
        urls = {
            slot.link_id: prefix
            + minter.mint(
                slot.destination,
                campaign_id=campaign_id,
                link_id=slot.link_id,
                contact_id=contact_id,
                sent_at=sent_at,
            )
            for slot in slots
        }
        html_part = self.html
        if decoy_slot is not None:
            chunk, offset = self.decoy_at
            chunks = list(html_part.chunks)
            text = chunks[chunk]
            chunks[chunk] = text[:offset] + DECOY_OPEN + urls[decoy_slot.link_id] + DECOY_CLOSE + text[offset:]
            html_part = _Part(chunks, html_part.slots)
        return html_part.render(urls), self.text.render(urls) if self.text is not None else None


def prepare(message_html: str, text: str | None = None) -> PreparedMessage:
    """Find every trackable link placement of a message once; render it per recipient."""
    finder = _LinkFinder(message_html)
    try:
        finder.scan()
    except (AssertionError, ValueError) as exc:  # html.parser gives up on a few malformed declarations
        raise RewriteError(f"the HTML cannot be tokenized: {exc}") from None
    part = _Part()
    pending = []  # the literal text since the last slot
    pos = 0
    next_id = 1
    decoy_at = (0, 0)
    for start, end, kind, payload in sorted([*finder.edits, (finder.body_end, finder.body_end, "decoy", None)]):
        pending.append(message_html[pos:start])
        pos = end
        if kind == "decoy":
            decoy_at = (len(part.chunks), sum(len(p) for p in pending))
            continue
        if kind == "remove":
            continue
        assert payload is not None
        destination, name = payload
        part.chunks.append("".join(pending))
        pending = []
        part.slots.append(LinkSlot(next_id, destination, name or f"link_{next_id}", "html"))
        next_id += 1
    pending.append(message_html[pos:])
    part.chunks.append("".join(pending))
    skipped = finder.skipped
    text_part = _prepare_text(text, next_id, skipped) if text is not None else None
    return PreparedMessage(part, text_part, skipped, decoy_at)


def _prepare_text(text: str, next_id: int, skipped: list[Skipped]) -> _Part:
    part = _Part(chunks=[""])
    pos = 0
    for match in TEXT_URL.finditer(text):
        url = _trim_text_url(match.group(0))
        start, end = match.start(), match.start() + len(url)
        reason = _untrackable(url)
        if reason:
            skipped.append(Skipped(url, reason))
            continue
        part.chunks[-1] += text[pos:start]
        part.slots.append(LinkSlot(next_id, validate_destination(url), f"text_link_{next_id}", "text"))
        part.chunks.append("")
        next_id += 1
        pos = end
    part.chunks[-1] += text[pos:]
    return part


def _trim_text_url(url: str) -> str:
    """Drop sentence punctuation after a URL in prose, but keep a closing bracket the URL opened."""
    while url and url[-1] in TEXT_TRAILING:
        if url[-1] == ")" and url.count("(") >= url.count(")"):
            break
        url = url[:-1]
    return url


_CHARREF = re.compile(r"&(#[0-9]+;?|#[xX][0-9a-fA-F]+;?|[A-Za-z][A-Za-z0-9]*;?)")


def unescape_attribute(value: str) -> str:
    """Decode character references the way a browser does inside an attribute value: a named reference
    without its ';' stays as written when a letter, digit or '=' follows it (``?a=1&region=eu`` keeps its
    ``&region``, where ``html.unescape`` would turn it into ``®ion``)."""

    def decode(match: re.Match[str]) -> str:
        ref = match.group(1)
        if ref.startswith("#"):
            return html.unescape(match.group(0))
        if ref in html.entities.html5 and (ref.endswith(";") or value[match.end() : match.end() + 1] != "="):
            return html.entities.html5[ref]  # &amp; or a legacy reference such as &copy standing alone
        return match.group(0)  # no such name, or a legacy name with letters, digits or '=' right after it

    return _CHARREF.sub(decode, value)


def _untrackable(url: str) -> str | None:
    if any(mark in url for mark in PLACEHOLDER_MARKS):
        return "template placeholder"
    if not url.lower().startswith(("http://", "https://")):
        scheme = url.split(":", 1)[0].lower() if ":" in url else ""
        return f"{scheme}: link" if scheme else ("in-page anchor" if url.startswith("#") else "not an absolute URL")
    try:
        validate_destination(url)
    except DestinationError as exc:
        return str(exc)
    return None


# Python 3.11's tokenizer is quadratic on a few malformed inputs (CVE-2025-6069 and relatives), "<a "
# repeated worst of all: each doubling of the input takes about four times as long. Two causes:
# 1. An unclosed "<a", "</", "<?", "<!…" is scanned to the end of the document, and with no ">" after it
#    the next "<" is tried the same way. Every construct the tokenizer reports ends with ">", so whatever
#    follows the last ">" yields no edit: only the document up to it is fed.
# 2. The end of a comment ("-->") or marked section ("]]>", "]>") is searched for anew from every "<!--"
#    or "<![" that starts one, to the end of the document when there is none. _LinkFinder remembers
#    where a search found nothing. These are _markupbase's patterns.
_COMMENT_CLOSE = re.compile(r"--\s*>")
_SECTION_CLOSE = re.compile(r"]\s*]\s*>")
_MS_SECTION_CLOSE = re.compile(r"]\s*>")
_SECTION_KINDS = {"temp", "cdata", "ignore", "include", "rcdata"}
_MS_SECTION_KINDS = {"if", "else", "endif"}


class _LinkFinder(HTMLParser):
    """Collects edits as (start, end, kind, payload) offsets into the source document."""

    def __init__(self, source: str, base: int = 0) -> None:
        super().__init__(convert_charrefs=True)
        self.source = source
        self.base = base
        self.edits: list[tuple[int, int, str, tuple[str, str] | None]] = []
        self.skipped: list[Skipped] = []
        self._line_starts = [0]
        for i, ch in enumerate(source):
            if ch == "\n":
                self._line_starts.append(i + 1)
        self._fed = 0
        self._nothing_from: dict[re.Pattern[str], int] = {}
        self.body_end = 0  # just after the first <body ...> start tag; 0 when there is none

    def scan(self) -> None:
        self._fed = self.source.rfind(">") + 1
        self.feed(self.source[: self._fed])  # see _COMMENT_CLOSE for why not the rest
        self.close()

    def _search(self, pattern: re.Pattern[str], i: int) -> re.Match[str] | None:
        """``pattern.search(self.rawdata, i)``, but a search from where an earlier one found nothing (or
        from further on) is answered without scanning again. rawdata is always a suffix of what was fed."""
        at = self._fed - len(self.rawdata) + i
        if at >= self._nothing_from.get(pattern, self._fed + 1):
            return None
        match = pattern.search(self.rawdata, i)
        if match is None:
            self._nothing_from[pattern] = at
        return match

    def parse_comment(self, i: int, report: bool = True) -> int:
        # _markupbase.ParserBase.parse_comment, with a remembered search.
        match = self._search(_COMMENT_CLOSE, i + 4)
        if match is None:
            return -1
        if report:
            self.handle_comment(self.rawdata[i + 4 : match.start()])
        return match.end()

    def parse_marked_section(self, i: int, report: bool = True) -> int:
        # _markupbase.ParserBase.parse_marked_section, with a remembered search.
        name, j = self._scan_name(i + 3, i)  # type: ignore[attr-defined]  # _markupbase's, not in typeshed
        if j < 0:
            return int(j)
        if name in _SECTION_KINDS:
            match = self._search(_SECTION_CLOSE, i + 3)
        elif name in _MS_SECTION_KINDS:
            match = self._search(_MS_SECTION_CLOSE, i + 3)
        else:
            raise AssertionError(f"unknown status keyword {self.rawdata[i + 3 : j]!r} in marked section")
        if match is None:
            return -1
        if report:
            self.unknown_decl(self.rawdata[i + 3 : match.start()])
        return match.end()

    def _offset(self) -> int:
        line, column = self.getpos()
        return self._line_starts[line - 1] + column

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if tag == "body" and not self.body_end and self.base == 0:
            raw = self.get_starttag_text() or ""
            start = self._offset()
            if self.source[start : start + len(raw)] == raw:
                self.body_end = start + len(raw)
            return
        if tag not in ("a", "area") and not tag.startswith("v:"):
            return
        raw = self.get_starttag_text() or ""
        start = self._offset()
        if self.source[start : start + len(raw)] != raw:
            return  # cannot place it in the source: leave it exactly as it is
        spans = _attribute_spans(raw)
        href = spans.get("href")
        if href is None:
            return
        off = spans.get(OFF_ATTRIBUTE)
        if off is not None and raw[off.value_start : off.value_end].strip().lower() == "off":
            self.edits.append((self.base + start + off.attr_start, self.base + start + off.attr_end, "remove", None))
            return
        value = unescape_attribute(raw[href.value_start : href.value_end]).strip()
        reason = _untrackable(value)
        if reason:
            self.skipped.append(Skipped(value, reason))
            return
        named = spans.get(NAME_ATTRIBUTE)
        name = ""
        if named is not None:
            name = unescape_attribute(raw[named.value_start : named.value_end]).replace("\x00", "").strip()[:200]
        destination = validate_destination(value)
        self.edits.append(
            (
                self.base + start + href.value_start,
                self.base + start + href.value_end,
                "slot",
                (destination, name),
            )
        )

    def handle_startendtag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.handle_starttag(tag, attrs)

    def handle_comment(self, data: str) -> None:
        # Outlook conditional comments hold markup Outlook renders, VML buttons with an href among it.
        if not data.startswith("[if"):
            return
        start = self._offset() + len("<!--")
        if self.source[start : start + len(data)] != data:
            return
        inner = _LinkFinder(data, self.base + start)
        inner.scan()
        self.edits.extend(inner.edits)
        self.skipped.extend(inner.skipped)


@dataclass(frozen=True, slots=True)
class _Span:
    attr_start: int  # the whitespace before the attribute, so removing it leaves the tag tidy
    attr_end: int
    value_start: int
    value_end: int


def _attribute_spans(tag: str) -> dict[str, _Span]:
    """Attribute name -> where it and its value are, within one raw start tag (HTML's attribute rules)."""
    spans: dict[str, _Span] = {}
    n = len(tag)
    i = 1
    while i < n and not (tag[i].isspace() or tag[i] in "/>"):
        i += 1  # the tag name
    while i < n:
        attr_start = i
        while i < n and (tag[i].isspace() or tag[i] == "/"):
            i += 1
        if i >= n or tag[i] == ">":
            break
        name_start = i
        i += 1  # a name's first character may be anything but space, "/" and ">" (even "=")
        while i < n and not (tag[i].isspace() or tag[i] in "/>="):
            i += 1
        name = tag[name_start:i].lower()
        j = i
        while j < n and tag[j].isspace():
            j += 1
        if j < n and tag[j] == "=":
            j += 1
            while j < n and tag[j].isspace():
                j += 1
            if j < n and tag[j] in "\"'":
                quote = tag[j]
                end = tag.find(quote, j + 1)
                end = n - 1 if end < 0 else end
                value_start, value_end, i = j + 1, end, end + 1
            else:
                k = j
                while k < n and not (tag[k].isspace() or tag[k] == ">"):
                    k += 1
                value_start, value_end, i = j, k, k
        else:
            value_start = value_end = i
        spans.setdefault(name, _Span(attr_start, i, value_start, value_end))
    return spans
