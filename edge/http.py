"""HTTP/1.1 for the edge: aiohttp's request parser under one small asyncio protocol.

aiohttp's ``web.Server`` builds a request object, a payload stream, a response object and a writer for
every request, and runs the handler as a coroutine: about 26 µs a request around the handler on this
kind of machine. The edge needs none of it; every answer is a few hundred bytes known at once. So each
connection feeds aiohttp's own parser (llhttp in C: the same limits and header validation as aiohttp's
server) and writes the answer's bytes itself. With a fixed 302 this serves 2.6 times the requests/s of the
bare ``web.Server`` (loadtests/README.md).

Per connection:

- Requests are answered in order, pipelined ones too; all answers for one read go out in one write.
- After ``Connection: close``, HTTP/1.0 without keep-alive, a request with a body, an upgrade, an
  unparsable request or a handler error, the answer is sent and the connection closed.
- A handler may ask for its answer to wait (``Answer``'s ``wait``): the connection's answers are then held,
  in order, until ``Handler.wait_durable`` returns, and no more requests are read meanwhile.
- While the client does not read its answers, the connection stops reading requests (flow control); it
  also stops within an event-loop pass once it has answers waiting to be written, and a client that
  pipelines more than ``MAX_ANSWER_BYTES`` of answers into one read gets those and is disconnected. A
  connection asked to close that is still there a timeout later (its client reads nothing) is aborted.
- A connection that completes no request for ``keepalive_timeout`` seconds is closed: idle ones, and
  ones that trickle a request in a byte at a time.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable
from email.utils import formatdate
from typing import Protocol, cast

from aiohttp.http_exceptions import HttpProcessingError, LineTooLong
from aiohttp.http_parser import HttpRequestParser
from aiohttp.streams import EMPTY_PAYLOAD
from multidict import CIMultiDictProxy

log = logging.getLogger("clickedge.edge.http")

# Long enough that every oversized token still reaches the handler and gets its 414 page.
MAX_LINE_SIZE = 16384
MAX_FIELD_SIZE = 8190
MAX_HEADERS = 128
READ_LIMIT = 2**16
MAX_ANSWER_BYTES = 1 << 20  # answers to one read of pipelined requests, before the connection is closed

_CLOSE = b"Connection: close\r\n"
_KEEP_ALIVE = b"Connection: keep-alive\r\n"
_HTTP_1_0 = (1, 0)


# (head, body, wait). head: the status line and headers, each line ending in CRLF; Date, Connection and
# the blank line are added here. wait: hold this answer (and those after it) until Handler.wait_durable
# returns. A plain tuple: one is built per request, and a NamedTuple's constructor costs a fifth of a µs.
Answer = tuple[bytes, bytes, bool]


class Handler(Protocol):
    draining: bool  # while set, answers say Connection: close, so clients move to other nodes

    def respond(self, method: str, path: str, headers: CIMultiDictProxy[str], peer: str) -> Answer:
        """Answer one request. Must not raise for anything a client can send."""

    def bad_request(self, exc: HttpProcessingError, *, line_too_long: bool) -> Answer:
        """Answer a request that could not be parsed; the connection is closed after it."""

    def server_error(self) -> Answer:
        """Answer after respond() raised (a bug); the connection is closed after it."""

    def before_send(self) -> None:
        """Called once per event-loop pass, before the answers to that pass's requests are written."""

    def wait_durable(self) -> Awaitable[None]:
        """Return once what the held answers stand for is safe (for the edge: clicks on disk)."""


class HttpServer:
    """Listens, tracks connections, closes idle ones, and stops in order."""

    def __init__(self, handler: Handler, *, keepalive_timeout: float) -> None:
        self.handler = handler
        self.keepalive_timeout = keepalive_timeout
        self.connections: set[_Connection] = set()
        self.date_line = b""
        self.date_crlf = b""  # b"Date: ...\r\n\r\n", the end of every kept-alive answer
        self._server: asyncio.Server | None = None
        self._loop = asyncio.get_running_loop()
        self._timers: dict[str, asyncio.TimerHandle] = {}
        self._all_closed = asyncio.Event()
        self._deferred: list[tuple[_Connection, list[bytes], bool, bool]] = []
        self._tick()

    async def listen(self, host: str, port: int, *, reuse_port: bool, backlog: int = 2048) -> int:
        self._server = await self._loop.create_server(
            lambda: _Connection(self), host, port, reuse_port=reuse_port or None, backlog=backlog
        )
        self._sweep()
        return int(self._server.sockets[0].getsockname()[1])

    def _tick(self) -> None:
        self.date_line = b"Date: " + formatdate(usegmt=True).encode() + b"\r\n"
        self.date_crlf = self.date_line + b"\r\n"
        self._timers["date"] = self._loop.call_later(1.0, self._tick)

    def _sweep(self) -> None:
        idle_since = self._loop.time() - self.keepalive_timeout
        for connection in list(self.connections):
            if connection.closed_at and connection.closed_at < idle_since:
                connection.abort()  # asked to close a timeout ago and still here: the client reads nothing
            elif connection.last_request < idle_since and not connection.held:
                connection.close()
        self._timers["sweep"] = self._loop.call_later(max(0.05, self.keepalive_timeout / 4), self._sweep)

    def defer(self, connection: _Connection, out: list[bytes], close: bool, wait: bool) -> None:
        """Send these answers at the end of this event-loop pass, after ``Handler.before_send``: the edge
        writes the clicks of every request read in the pass with one write() before answering any."""
        if not self._deferred:
            self._loop.call_soon(self._send_deferred)
        self._deferred.append((connection, out, close, wait))

    def _send_deferred(self) -> None:
        deferred, self._deferred = self._deferred, []
        if deferred:
            self.handler.before_send()
        for connection, out, close, wait in deferred:
            connection.send(out, close, wait)

    def closed(self, connection: _Connection) -> None:
        self.connections.discard(connection)
        if not self.connections:
            self._all_closed.set()

    async def stop(self, timeout: float) -> None:
        """Stop accepting, close every connection once its answers are written, and give up on
        clients that do not read them after ``timeout`` seconds."""
        if self._server is not None:
            self._server.close()
        self._send_deferred()
        for timer in self._timers.values():
            timer.cancel()
        for connection in list(self.connections):
            connection.close()
        if self.connections:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._all_closed.wait(), timeout)
        for connection in list(self.connections):
            connection.abort()
        if self._server is not None:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._server.wait_closed(), 1.0)


class _Connection(asyncio.Protocol):
    __slots__ = (
        "_closing",
        "_deferred",
        "_handler",
        "_parser",
        "_paused_for_send",
        "_pauses",
        "_peer",
        "_server",
        "_transport",
        "_waiter",
        "closed_at",
        "held",
        "last_request",
    )

    def __init__(self, server: HttpServer) -> None:
        self._server = server
        self._handler = server.handler
        self._transport: asyncio.Transport | None = None
        self._parser: HttpRequestParser | None = None
        self._peer = ""
        self._closing = False
        self._pauses = 0  # reasons not to read: the client reads no answers, answers are held or deferred
        self._deferred = False  # answers of this event-loop pass wait for HttpServer._send_deferred
        self._paused_for_send = False
        self.closed_at = 0.0  # when close() was asked for
        self._waiter: asyncio.Task[None] | None = None
        self.held: list[bytes] = []
        self.last_request = 0.0

    # The payload stream aiohttp's parser creates for a request body looks for these. Bodies are never
    # read: the connection closes after answering.
    _reading_paused = False

    def pause_reading(self) -> None:
        pass

    def resume_reading(self) -> None:
        pass

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self._transport = cast(asyncio.Transport, transport)  # uvloop's transports do not subclass asyncio's
        loop = asyncio.get_running_loop()
        peer = transport.get_extra_info("peername")
        self._peer = peer[0] if isinstance(peer, tuple) else ""
        self._parser = HttpRequestParser(
            self,  # type: ignore[arg-type]  # only the attributes above are used, for bodies
            loop,
            READ_LIMIT,
            max_line_size=MAX_LINE_SIZE,
            max_field_size=MAX_FIELD_SIZE,
            max_headers=MAX_HEADERS,
        )
        self.last_request = loop.time()
        self._server.connections.add(self)
        self._server._all_closed.clear()

    def connection_lost(self, exc: Exception | None) -> None:
        self._server.closed(self)
        self._closing = True
        if self._waiter is not None:
            self._waiter.cancel()
        self.held = []

    def pause_writing(self) -> None:
        self._pause()

    def resume_writing(self) -> None:
        self._resume()

    def data_received(self, data: bytes) -> None:
        if self._closing:
            return
        assert self._parser is not None and self._transport is not None
        handler = self._handler
        try:
            messages, _upgraded, _tail = self._parser.feed_data(data)
        except HttpProcessingError as exc:
            line_too_long = isinstance(exc, LineTooLong) and exc.args[1] == MAX_LINE_SIZE
            log.debug("unparsable request from %s: %s", self._peer, exc)
            answer = handler.bad_request(exc, line_too_long=line_too_long)
            self._closing = True  # read nothing more; answers deferred before this one still go first
            self._defer([self._finish(answer, "", close=True)], True, False)
            return
        if not messages:
            return
        out: list[bytes] = []
        wait = False
        close = False
        size = 0
        for message, payload in messages:
            # A client that pipelines more answers into one read than MAX_ANSWER_BYTES is not a browser
            # or a load balancer: it gets those, and the connection is closed.
            close = (
                message.should_close
                or payload is not EMPTY_PAYLOAD
                or message.upgrade
                or handler.draining
                or size >= MAX_ANSWER_BYTES
            )
            try:
                answer = handler.respond(message.method, message.path, message.headers, self._peer)
            except Exception:
                log.exception("error answering %s %.200s", message.method, message.path)
                answer, close = handler.server_error(), True
            head, body, wait_here = answer
            wait = wait or wait_here
            size += len(head) + len(body)
            if close:
                out.append(self._finish(answer, message.method, close=True))
                break
            if message.version == _HTTP_1_0:
                out.append(self._finish(answer, message.method, close=False, keep_alive=True))
            elif body and message.method != "HEAD":
                out.append(head + self._server.date_crlf + body)
            else:
                out.append(head + self._server.date_crlf)
        if close:
            self._closing = True
        self.last_request = asyncio.get_running_loop().time()
        self._defer(out, close, wait)

    def _defer(self, out: list[bytes], close: bool, wait: bool) -> None:
        if self._deferred and not self._paused_for_send:
            # A second read in one event-loop pass (uvloop reads on while data is there): read no more
            # until these answers are written, so a client that sends without reading is bounded.
            self._paused_for_send = True
            self._pause()
        self._deferred = True
        self._server.defer(self, out, close, wait)

    def send(self, out: list[bytes], close: bool, wait: bool) -> None:
        self._deferred = False
        if self._transport is None or self._transport.is_closing():
            return
        if wait or self.held:
            self._hold(out, close)
        else:
            self._send(out, close)
        if self._paused_for_send:
            self._paused_for_send = False
            self._resume()

    def _finish(self, answer: Answer, method: str, *, close: bool, keep_alive: bool = False) -> bytes:
        head, body, _ = answer
        head += self._server.date_line + (_CLOSE if close else _KEEP_ALIVE if keep_alive else b"")
        return head + b"\r\n" + (b"" if method == "HEAD" else body)

    def _send(self, out: list[bytes], close: bool = False) -> None:
        assert self._transport is not None
        if len(out) == 1:
            self._transport.write(out[0])
        else:
            self._transport.writelines(out)
        if close:
            self.close()

    def _hold(self, out: list[bytes], close: bool) -> None:
        self.held.extend(out)
        if close:
            self._closing = True
        if self._waiter is None:
            self._pause()  # no more requests until these are answered: the held list stays one read long
            self._waiter = asyncio.get_running_loop().create_task(self._release())

    async def _release(self) -> None:
        try:
            while self.held:
                count = len(self.held)
                await self._handler.wait_durable()  # covers every answer held before it was called
                out, self.held = self.held[:count], self.held[count:]
                if self._transport is not None and not self._transport.is_closing():
                    self._transport.writelines(out)
        finally:
            self._waiter = None
        if self._closing:
            self.close()
        else:
            self._resume()

    def _pause(self) -> None:
        self._pauses += 1
        if self._pauses == 1 and self._transport is not None:
            self._transport.pause_reading()

    def _resume(self) -> None:
        self._pauses = max(0, self._pauses - 1)
        if self._pauses == 0 and self._transport is not None and not self._transport.is_closing():
            self._transport.resume_reading()

    def close(self) -> None:
        """Close once the answers written so far are sent; held answers are sent first."""
        self._closing = True
        if not self.closed_at:
            self.closed_at = asyncio.get_running_loop().time()
        if self._waiter is None and self._transport is not None:
            self._transport.close()

    def abort(self) -> None:
        if self._transport is not None:
            self._transport.abort()
