"""The redirect handler: what each request to the edge gets. Decode the token in memory, add the click to
the spool, answer 302. No awaited I/O.

It also serves RFC 8058 one-click unsubscribes at ``/u/<token>``: a GET or HEAD shows a page with a button
and records nothing (mail scanners and link previews fetch every URL they see); the POST that button, or a
mail provider, sends with ``List-Unsubscribe=One-Click`` (edge/one_click.py) is spooled like a click, with
the outcome ``unsubscribe``, and the collector applies it.

The HTTP side is edge/protocol.py (aiohttp's parser under a small protocol); when the click added here
reaches disk, relative to its answer, is edge/durability.py. Answers that never change are built once, as
bytes; a redirect only adds its Location. The sampled access log wraps a handler (``SampledAccessLog``).
"""

from __future__ import annotations

import base64
import hashlib
import logging
import os
import random
import time
from collections.abc import Callable
from http import HTTPStatus

from aiohttp.http_exceptions import HttpProcessingError
from multidict import CIMultiDictProxy, istr
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from common import signals
from common.events import BLOCKED, UNSUBSCRIBE, UNSUBSCRIBE_METHOD, EventIds, click_payload
from edge import one_click
from edge.blocklist import Blocklist
from edge.clientip import ClientIP
from edge.metrics import EdgeMetrics
from edge.protocol import Answer
from edge.spool import Spool
from edge.syncer import Syncer
from links.token import INVALID, LINK_PATH, MALFORMED, OVERSIZED, UNSUBSCRIBE_PATH, TokenCodec, TokenError

log = logging.getLogger("clickedge.edge")
access = logging.getLogger("clickedge.access")
_LOGGED_PATH = 3 + 24

TOKEN_PREFIX = LINK_PATH
_TOKEN_START = len(TOKEN_PREFIX)

_STYLE = "body{font-family:sans-serif;max-width:32em;margin:4em auto;padding:0 1em}"
_PAGE = """<!doctype html>
<html lang="en"><head><meta charset="utf-8"><meta name="robots" content="noindex">
<title>{title}</title><style>{style}</style></head>
<body><h1>{title}</h1><p>{text}</p>{more}</body></html>
"""
_NO_STORE = b"Cache-Control: no-store\r\nReferrer-Policy: no-referrer\r\n"
# The unsubscribe pages run no script, load nothing, and post their form only to where they came from; the
# one style element is allowed by its hash.
_STYLE_HASH = base64.b64encode(hashlib.sha256(_STYLE.encode()).digest()).decode()
_CSP = "default-src 'none'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'"
_UNSUBSCRIBE_HEADERS = _NO_STORE + (
    f"Content-Security-Policy: {_CSP}; style-src 'sha256-{_STYLE_HASH}'\r\nX-Robots-Tag: noindex\r\n".encode()
)
_HTML = "text/html; charset=utf-8"
_TEXT = "text/plain; charset=utf-8"
_REDIRECT_HEAD = b"HTTP/1.1 302 Found\r\nLocation: "
_REDIRECT_TAIL = b"\r\n" + _NO_STORE + b"Content-Length: 0\r\n"


def answer(status: int, body: bytes = b"", content_type: str = _TEXT, extra: bytes = _NO_STORE) -> Answer:
    """A complete answer but for Date and Connection, which edge/protocol.py adds."""
    head = f"HTTP/1.1 {status} {HTTPStatus(status).phrase}\r\n".encode() + extra
    if body:
        head += f"Content-Type: {content_type}\r\n".encode()
    return head + f"Content-Length: {len(body)}\r\n".encode(), body, False


def _page(status: int, title: str, text: str, more: str = "", extra: bytes = _NO_STORE) -> Answer:
    return answer(status, _PAGE.format(title=title, style=_STYLE, text=text, more=more).encode(), _HTML, extra)


_INVALID_TEXT = "This link is not valid. It may have been copied incompletely or altered."
# A blocked link's answer names nothing of where it led.
_BLOCKED = _page(410, "Link disabled", "This link has been disabled by the sender's service. It leads nowhere now.")
PAGES = {
    INVALID: _page(404, "Link not valid", _INVALID_TEXT),
    MALFORMED: _page(400, "Link not valid", _INVALID_TEXT),
    OVERSIZED: _page(414, "Link not valid", "This link is too long to be a valid tracked link."),
    "not_found": _page(404, "Not found", "There is nothing here."),
}
# The header names made once, as multidict's istr: their lookups skip folding the name's case per request.
_header_signals = signals.reader(istr)
_METHOD_NOT_ALLOWED = answer(405, extra=b"Allow: GET, HEAD\r\n" + _NO_STORE)
_SERVER_ERROR = _page(500, "Something went wrong", "The link could not be followed. Please try again.")
_UNSUBSCRIBE_NOT_ALLOWED = answer(405, extra=b"Allow: GET, HEAD, POST\r\n" + _NO_STORE)
# No action: the form posts to the very URL it came from (the token in it), as RFC 8058's POST does.
_CONFIRM = _page(
    200,
    "Unsubscribe",
    "Press the button to unsubscribe from these emails.",
    f'<form method="post"><input type="hidden" name="{one_click.FIELD}" value="{one_click.VALUE}">'
    '<button type="submit">Unsubscribe</button></form>',
    _UNSUBSCRIBE_HEADERS,
)
_UNSUBSCRIBED = _page(
    200, "You are unsubscribed", "You will not get these emails any more.", extra=_UNSUBSCRIBE_HEADERS
)
_NOT_ONE_CLICK = _page(
    400,
    "Not an unsubscribe request",
    f"This request must carry {one_click.FIELD}={one_click.VALUE}.",
    extra=_UNSUBSCRIBE_HEADERS,
)
_TOO_LARGE = _page(
    413,
    "Request too large",
    f"An unsubscribe request is a few bytes long; this one is over {one_click.MAX_BODY} bytes.",
    extra=_UNSUBSCRIBE_HEADERS,
)
# Unlike a click, an unsubscribe the spool cannot take is not answered as done: the sender must not go on
# mailing someone who was told they are unsubscribed.
_UNSUBSCRIBE_UNAVAILABLE = _page(
    503,
    "Please try again",
    "Your request to unsubscribe could not be recorded just now. Please try again in a few minutes.",
    extra=b"Retry-After: 60\r\n" + _UNSUBSCRIBE_HEADERS,
)
_READY = answer(200, b"ready\n")
_DRAINING = answer(503, b"draining\n")
_SPOOL_FULL = answer(503, b"spool full: clicks are not being made durable\n")
_SPOOL_FAILING = answer(503, b"spool cannot write: clicks are not being made durable\n")


class RedirectHandler:
    """Answers the edge's port: tracked links, /healthz, /readyz and (unless a metrics port is set) /metrics."""

    def __init__(
        self,
        codec: TokenCodec,
        spool: Spool,
        syncer: Syncer,
        metrics: EdgeMetrics,
        client_ip: ClientIP,
        *,
        on_batch_ready: Callable[[], None],
        batch_size: int,
    ) -> None:
        self.codec = codec
        self.spool = spool
        self.syncer = syncer
        self.metrics = metrics
        self.client_ip = client_ip
        self.draining = False
        # Off when the worker has a metrics port of its own: the redirect port then serves no metrics.
        self.metrics_here = True
        self._on_batch_ready = on_batch_ready
        self._batch_size = batch_size
        self._since_wake = 0
        self._ids = EventIds()
        self._always = syncer.always
        self._redirects = metrics.outcome["redirect"]
        self._blocked = metrics.outcome["blocked"]
        # The kill switch (edge/blocklist.py): swapped whole by edge/blocklist_sync.py.
        self.blocklist = Blocklist()
        self._method_not_allowed = metrics.outcome["method_not_allowed"]
        self._unsubscribes = metrics.outcome["unsubscribe"]
        self._unsubscribe_pages = metrics.outcome["unsubscribe_page"]
        self._unsubscribes_refused = metrics.outcome["unsubscribe_refused"]
        # Which worker answered: SO_REUSEPORT spreads connections.
        self._health = answer(200, f"ok pid={os.getpid()}\n".encode())
        self._pages = {
            kind: (page, metrics.outcome.get(kind, metrics.outcome["not_found"])) for kind, page in PAGES.items()
        }

    def respond(self, method: str, path: str, headers: CIMultiDictProxy[str], peer: str) -> Answer:
        if path.startswith(TOKEN_PREFIX):
            return self.redirect(method, path, headers, peer)
        if path.startswith(UNSUBSCRIBE_PATH):
            return self.unsubscribe(method, path, headers, peer, b"")  # a POST without a body, or not a POST
        if path == "/healthz":
            return self._health
        if path == "/readyz":
            return self.readyz()
        if path == "/metrics" and self.metrics_here:
            return answer(200, generate_latest(self.metrics.registry), CONTENT_TYPE_LATEST)
        return self.error_page("not_found")

    def redirect(self, method: str, path: str, headers: CIMultiDictProxy[str], peer: str) -> Answer:
        started = time.perf_counter()
        if method != "GET" and method != "HEAD":
            self._method_not_allowed.value += 1
            return _METHOD_NOT_ALLOWED
        token = path[_TOKEN_START:]
        query = token.find("?")
        if query >= 0:
            token = token[:query]
        try:
            link = self.codec.decode(token)
        except TokenError as exc:
            return self.error_page(exc.kind)
        blocklist = self.blocklist
        blocked = blocklist.entries != 0 and blocklist.blocks(link.campaign_id, link.link_id, link.destination)
        if self.client_ip.enabled:
            # A proxy may add its own header line rather than extend the client's: read them all.
            forwarded = headers.getall("X-Forwarded-For", ())
            ip = self.client_ip.resolve(peer, ", ".join(forwarded) if forwarded else None)
        else:
            ip = peer
        now_us = time.time_ns() // 1000
        payload = click_payload(
            now_us,
            link.campaign_id,
            link.link_id,
            link.contact_id,
            link.sent_at,
            link.key_id,
            ip,
            headers.get("User-Agent", ""),
            method,
            _header_signals(headers.get),
            BLOCKED if blocked else None,
        )
        # Written before the answer (see before_send): once the recipient has been redirected, the click is
        # in the kernel. If it cannot be kept (spool full, disk failing) the recipient still lands; it is
        # counted.
        if self.spool.add(self._ids.next_bytes(now_us // 1000), payload):
            self._since_wake += 1
            if self._since_wake >= self._batch_size:
                self._since_wake = 0
                self._on_batch_ready()
        if blocked:
            self._blocked.value += 1
            return _BLOCKED[0], _BLOCKED[1], self._always  # recorded as durably as a click
        self._redirects.value += 1
        self.metrics.handler_seconds.observe(time.perf_counter() - started)
        # fsync=always: the answer waits until the click is on disk (the syncer groups concurrent waits).
        return _REDIRECT_HEAD + link.destination.encode() + _REDIRECT_TAIL, b"", self._always

    def body_limit(self, method: str, path: str) -> int:
        return one_click.MAX_BODY if method == UNSUBSCRIBE_METHOD and path.startswith(UNSUBSCRIBE_PATH) else 0

    def respond_with_body(
        self, method: str, path: str, headers: CIMultiDictProxy[str], peer: str, body: bytes | None
    ) -> Answer:
        return self.unsubscribe(method, path, headers, peer, body)

    def unsubscribe(
        self, method: str, path: str, headers: CIMultiDictProxy[str], peer: str, body: bytes | None
    ) -> Answer:
        """``/u/<token>``: the confirmation page (GET, HEAD), or the one-click unsubscribe (POST); ``body``
        is None when it was too large to read. The kill switch does not apply: a blocked campaign's
        recipients can still leave it."""
        if method != UNSUBSCRIBE_METHOD and method != "GET" and method != "HEAD":
            self._method_not_allowed.value += 1
            return _UNSUBSCRIBE_NOT_ALLOWED
        try:
            who = self.codec.decode_unsubscribe(path[len(UNSUBSCRIBE_PATH) :].partition("?")[0])
        except TokenError as exc:
            return self.error_page(exc.kind)
        if method != UNSUBSCRIBE_METHOD:
            self._unsubscribe_pages.value += 1
            return _CONFIRM
        if body is None or not one_click.requested(body, headers.get("Content-Type", "")):
            self._unsubscribes_refused.value += 1
            return _TOO_LARGE if body is None else _NOT_ONE_CLICK
        # Recorded as redirect() records a click, written out again: a method shared with it would add a call
        # to every click for the sake of a rare request.
        if self.client_ip.enabled:
            forwarded = headers.getall("X-Forwarded-For", ())
            ip = self.client_ip.resolve(peer, ", ".join(forwarded) if forwarded else None)
        else:
            ip = peer
        now_us = time.time_ns() // 1000
        payload = click_payload(
            now_us,
            who.campaign_id,
            0,
            who.contact_id,
            who.sent_at,
            who.key_id,
            ip,
            headers.get("User-Agent", ""),
            method,
            _header_signals(headers.get),
            UNSUBSCRIBE,
        )
        if not self._spooled(now_us, payload):
            self._unsubscribes_refused.value += 1
            return _UNSUBSCRIBE_UNAVAILABLE
        self._unsubscribes.value += 1
        # As durable as a click before its answer: "you are unsubscribed" must not be forgotten.
        return _UNSUBSCRIBED[0], _UNSUBSCRIBED[1], self._always

    def _spooled(self, now_us: int, payload: bytes) -> bool:
        if not self.spool.add(self._ids.next_bytes(now_us // 1000), payload):
            return False
        self._since_wake += 1
        if self._since_wake >= self._batch_size:
            self._since_wake = 0
            self._on_batch_ready()
        return True

    def readyz(self) -> Answer:
        if self.draining:
            return _DRAINING
        if not self.spool.healthy:
            return _SPOOL_FULL if self.spool.full else _SPOOL_FAILING
        return _READY

    def error_page(self, kind: str) -> Answer:
        page, counter = self._pages[kind]
        counter.inc()
        return page

    def bad_request(self, exc: HttpProcessingError, *, line_too_long: bool) -> Answer:
        # An absurdly long request line is an oversized token; anything else unparsable is malformed.
        # Counted, and logged only at debug level: the open internet sends plenty of garbage.
        return self.error_page(OVERSIZED if line_too_long else MALFORMED)

    def server_error(self) -> Answer:
        return _SERVER_ERROR


class SampledAccessLog:
    """A handler that writes ``fraction`` of the requests it answers to the log, around another handler
    (the sampled access log, off by default: CLICKEDGE_ACCESS_LOG_SAMPLE)."""

    def __init__(self, handler: RedirectHandler, fraction: float, rng: random.Random | None = None) -> None:
        self.handler = handler
        self._fraction = fraction
        # Its own: sampling does not touch the process's global state. A seeded one makes it repeatable.
        self._draw = (rng or random.Random()).random

    @property
    def draining(self) -> bool:
        return self.handler.draining

    def respond(self, method: str, path: str, headers: CIMultiDictProxy[str], peer: str) -> Answer:
        return self._sample(method, path, headers, peer, self.handler.respond(method, path, headers, peer))

    def body_limit(self, method: str, path: str) -> int:
        return self.handler.body_limit(method, path)

    def respond_with_body(
        self, method: str, path: str, headers: CIMultiDictProxy[str], peer: str, body: bytes | None
    ) -> Answer:
        answered = self.handler.respond_with_body(method, path, headers, peer, body)
        return self._sample(method, path, headers, peer, answered)

    def _sample(self, method: str, path: str, headers: CIMultiDictProxy[str], peer: str, answered: Answer) -> Answer:
        if self._draw() < self._fraction:
            head = answered[0]
            access.info(
                "%s %s %s",
                method,
                path[:_LOGGED_PATH],
                head[9:12].decode(),
                extra={
                    "method": method,
                    # Enough of a token to find it again, not the whole (it says who clicked).
                    "path": path[:_LOGGED_PATH],
                    "status": int(head[9:12]),
                    "peer": peer,
                    "user_agent": headers.get("User-Agent", "")[:200],
                },
            )
        return answered

    def bad_request(self, exc: HttpProcessingError, *, line_too_long: bool) -> Answer:
        return self.handler.bad_request(exc, line_too_long=line_too_long)

    def server_error(self) -> Answer:
        return self.handler.server_error()


class MetricsEndpoint:
    """A worker's own metrics port: /metrics and /healthz, nothing else (see --metrics-port)."""

    def __init__(self, handler: RedirectHandler) -> None:
        self.edge = handler
        self.draining = False

    def respond(self, method: str, path: str, headers: CIMultiDictProxy[str], peer: str) -> Answer:
        if path == "/metrics":
            return answer(200, generate_latest(self.edge.metrics.registry), CONTENT_TYPE_LATEST)
        if path == "/healthz":
            return self.edge.respond(method, path, headers, peer)
        return PAGES["not_found"]

    def body_limit(self, method: str, path: str) -> int:
        return 0  # no bodies: respond answers, and the connection is closed

    def respond_with_body(
        self, method: str, path: str, headers: CIMultiDictProxy[str], peer: str, body: bytes | None
    ) -> Answer:
        return self.respond(method, path, headers, peer)  # never asked: body_limit takes no body

    def bad_request(self, exc: HttpProcessingError, *, line_too_long: bool) -> Answer:
        return PAGES[MALFORMED]

    def server_error(self) -> Answer:
        return _SERVER_ERROR
