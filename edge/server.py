"""The redirect edge: decode a token in memory, spool the click, answer 302. No awaited I/O on the hot path.

Built on aiohttp's low-level ``web.Server`` with one raw handler (the router and raised HTTP exceptions
cost a quarter to a half of the throughput; see shared/FIELD.md). Responses that never change are built
once; a redirect only adds its Location. The one system call per click is the spool's write(), which
returns as soon as the bytes are in the page cache.
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Callable

from aiohttp import web
from aiohttp.http_exceptions import BadHttpMessage, LineTooLong
from aiohttp.web_protocol import RequestHandler
from aiohttp.web_request import BaseRequest
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from clickedge.events import MAX_USER_AGENT, EventIds, click_payload
from edge.clientip import ClientIP
from edge.metrics import EdgeMetrics
from edge.spool import Spool
from edge.syncer import Syncer
from edge.token import INVALID, LINK_PATH, MALFORMED, OVERSIZED, TokenCodec, TokenError

log = logging.getLogger("clickedge.edge")

TOKEN_PREFIX = LINK_PATH
# Long enough that every oversized token still reaches the handler and gets its 414 page.
MAX_LINE_SIZE = 16384

_PAGE = """<!doctype html>
<html lang="en"><head><meta charset="utf-8"><meta name="robots" content="noindex">
<title>{title}</title></head>
<body style="font-family:sans-serif;max-width:32em;margin:4em auto;padding:0 1em">
<h1>{title}</h1><p>{text}</p></body></html>
"""
_NO_STORE = {"Cache-Control": "no-store", "Referrer-Policy": "no-referrer"}


def _page(status: int, title: str, text: str) -> tuple[int, bytes]:
    return status, _PAGE.format(title=title, text=text).encode()


_INVALID_TEXT = "This link is not valid. It may have been copied incompletely or altered."
PAGES = {
    INVALID: _page(404, "Link not valid", _INVALID_TEXT),
    MALFORMED: _page(400, "Link not valid", _INVALID_TEXT),
    OVERSIZED: _page(414, "Link not valid", "This link is too long to be a valid tracked link."),
    "not_found": _page(404, "Not found", "There is nothing here."),
}


class Edge:
    """State shared by the handler: the codec, the spool, metrics, and readiness."""

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
        self._on_batch_ready = on_batch_ready
        self._batch_size = batch_size
        self._since_wake = 0
        self._ids = EventIds()
        self._health = f"ok pid={os.getpid()}\n"  # which worker answered: SO_REUSEPORT spreads connections
        self._pages = {
            kind: (status, body, metrics.outcome.get(kind, metrics.outcome["not_found"]))
            for kind, (status, body) in PAGES.items()
        }

    async def handle(self, request: BaseRequest) -> web.StreamResponse:
        path = request.raw_path
        if path.startswith(TOKEN_PREFIX):
            response = self.redirect(request, path)
            if self.syncer.always and response.status == 302:
                # fsync=always: answer only once the click is on disk (the spool groups concurrent waits).
                await self.syncer.wait()
            return response
        if path == "/healthz":
            return web.Response(text=self._health, headers=_NO_STORE)
        if path == "/readyz":
            return self.readyz()
        if path == "/metrics":
            return web.Response(
                body=generate_latest(self.metrics.registry), headers={"Content-Type": CONTENT_TYPE_LATEST}
            )
        return self.error_page("not_found")

    def redirect(self, request: BaseRequest, path: str) -> web.Response:
        started = time.perf_counter()
        metrics = self.metrics
        method = request.method
        if method != "GET" and method != "HEAD":
            metrics.outcome["method_not_allowed"].inc()
            return web.Response(status=405, headers={"Allow": "GET, HEAD", **_NO_STORE})
        token = path[len(TOKEN_PREFIX) :]
        query = token.find("?")
        if query >= 0:
            token = token[:query]
        try:
            link = self.codec.decode(token)
        except TokenError as exc:
            return self.error_page(exc.kind)
        headers = request.headers
        peer = request.remote or ""
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
            headers.get("User-Agent", "")[:MAX_USER_AGENT],
            method,
        )
        # Written before the answer: once the recipient has been redirected, the click is in the kernel.
        # If it cannot be written (spool full, disk failing) the recipient still lands; it is counted.
        if self.spool.append(self._ids.next_bytes(now_us // 1000), payload):
            self._since_wake += 1
            if self._since_wake >= self._batch_size:
                self._since_wake = 0
                self._on_batch_ready()
        response = web.Response(status=302, headers={"Location": link.destination, **_NO_STORE})
        metrics.outcome["redirect"].inc()
        metrics.handler_seconds.observe(time.perf_counter() - started)
        return response

    def readyz(self) -> web.Response:
        if self.draining:
            return web.Response(status=503, text="draining\n", headers=_NO_STORE)
        if not self.spool.healthy:
            why = "spool full" if self.spool.full else "spool cannot write"
            return web.Response(status=503, text=f"{why}: clicks are not being made durable\n", headers=_NO_STORE)
        return web.Response(text="ready\n", headers=_NO_STORE)

    def error_page(self, kind: str) -> web.Response:
        status, body, counter = self._pages[kind]
        counter.inc()
        return web.Response(status=status, body=body, content_type="text/html", charset="utf-8", headers=_NO_STORE)


class _EdgeRequestHandler(RequestHandler):
    """Answers requests that fail to parse with the edge's own pages instead of aiohttp's text ones.

    A request line longer than MAX_LINE_SIZE (an absurdly long token) gets the 414 page; any other
    unparsable request the 400 page. Either is counted, and logged only at debug level: the open
    internet sends plenty of garbage, and an error log line for each would be a cheap flood.
    """

    edge: Edge

    def handle_error(
        self,
        request: BaseRequest,
        status: int = 500,
        exc: BaseException | None = None,
        message: str | None = None,
    ) -> web.StreamResponse:
        if not isinstance(exc, BadHttpMessage) or request.writer.output_size > 0:
            return super().handle_error(request, status, exc, message)
        self.logger.debug("unparsable request from %s: %s", request.remote, exc)
        line_too_long = isinstance(exc, LineTooLong) and exc.args[1] == MAX_LINE_SIZE
        response = self.edge.error_page(OVERSIZED if line_too_long else MALFORMED)
        response.force_close()
        return response


class _EdgeServer(web.Server):
    def __init__(self, edge: Edge) -> None:
        # No access log: a log line per click costs more than the redirect itself.
        super().__init__(edge.handle, max_line_size=MAX_LINE_SIZE, max_field_size=8190, access_log=None)
        self._edge = edge

    def __call__(self) -> RequestHandler:
        handler = _EdgeRequestHandler(self, loop=self._loop, **self._kwargs)
        handler.edge = self._edge
        return handler


def make_server(edge: Edge) -> web.Server:
    return _EdgeServer(edge)
