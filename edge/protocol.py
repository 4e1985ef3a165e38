"""HTTP/1.1 for the edge: aiohttp's request parser under one small asyncio protocol.

aiohttp's ``web.Server`` builds a request object, a payload stream, a response object and a writer for
every request, and runs the handler as a coroutine. The edge needs none of it; every answer is a few
hundred bytes known at once. So each connection feeds aiohttp's own parser (llhttp in C: the same limits
and header validation as aiohttp's server) and writes the answer's bytes itself (the measured choice: see
loadtests/README.md, section "Results: the harness").

Per connection:

- Requests are answered in order, pipelined ones too; all answers for one event-loop pass go out in one
  write. Absolute-form targets (``GET http://host/c/… HTTP/1.1``) are routed by their path.
- After ``Connection: close``, HTTP/1.0 without keep-alive, a request with a body, an upgrade, an
  unparsable request or a handler error, the answer is sent and the connection closed.
- A request body is read only where the handler takes one (``Handler.body_limit``: the edge's one-click
  unsubscribe POSTs). The connection then reads that body, and nothing after it: once the body is complete
  (its Content-Length, or the last chunk) ``Handler.respond_with_body`` answers, and the connection closes.
  A body declared or growing beyond the limit is answered at once (``respond_with_body`` gets ``None``); a
  body that does not complete is closed by the keep-alive timeout like any unfinished request. Any other
  body is never read.
- What the answers of one event-loop pass stand for is made durable before they are written: the server
  calls ``Durability.flush`` once per pass first (edge/durability.py says what that means for a click).
  A handler may ask for its answer to wait (``Answer``'s ``wait``): the connection's answers are then
  held, in order, until ``Durability.wait`` returns, and no more requests are read meanwhile.
- Memory stays bounded whatever a client sends and however little it reads: reads go into one buffer
  that every connection shares (``READ_SIZE``); input is fed to the parser one request head at a time, and
  a connection answers at most ``PIPELINE_ANSWERS`` requests per event-loop pass. What it has read and not
  parsed waits, with reading paused, until those answers are written; nothing more is parsed while the
  client leaves more than ``WRITE_HIGH`` bytes of answers untaken. A connection asked to
  close that is still there a timeout later (its client reads nothing) is aborted.
- A connection that completes no request for ``keepalive_timeout`` seconds is closed: idle ones, and
  ones that trickle a request in a byte at a time.
- Nothing a client sends, and no bug in the handler, reaches the event loop: an exception from the parser
  is a 400 and one from the handler a 500, each followed by closing the connection, counted in
  ``HttpServer.errors`` and logged at most once per ten seconds.

aiohttp's parser is a private interface: pyproject.toml pins the aiohttp minor version it was tested with,
and tests/edge/test_parser_contract.py fails loudly when what this module relies on changes.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable
from email.utils import formatdate
from typing import Protocol, cast

from aiohttp.http_exceptions import BadHttpMessage, HttpProcessingError, LineTooLong
from aiohttp.http_parser import HttpRequestParser, RawRequestMessage
from aiohttp.streams import EMPTY_PAYLOAD, StreamReader
from multidict import CIMultiDictProxy

from common.logs import Throttled

log = logging.getLogger("clickedge.edge.protocol")
_errors_log = Throttled(log)

# Long enough that every oversized token still reaches the handler and gets its 414 page.
MAX_LINE_SIZE = 16384
MAX_FIELD_SIZE = 8190
MAX_HEADERS = 128
BODY_LIMIT = 2**16  # the parser's payload-stream limit; a handler takes far smaller bodies (body_limit)
READ_SIZE = 16384  # one read, into a buffer shared by every connection
PIPELINE_ANSWERS = 16  # answers per connection per event-loop pass, then the rest of the input waits
WRITE_HIGH = 16384  # the transport's write-buffer limits: beyond HIGH, parse nothing until it is down to LOW
WRITE_LOW = 4096

_CLOSE = b"Connection: close\r\n"
_KEEP_ALIVE = b"Connection: keep-alive\r\n"
_HTTP_1_0 = (1, 0)
_PARSER_FAILED = BadHttpMessage("the request could not be parsed")


# (head, body, wait). head: the status line and headers, each line ending in CRLF; Date, Connection and
# the blank line are added here. wait: hold this answer (and those after it) until Durability.wait
# returns. A plain tuple: one is built per request, and a NamedTuple's constructor is a Python call.
Answer = tuple[bytes, bytes, bool]


class Handler(Protocol):
    @property
    def draining(self) -> bool:
        """While true, answers say Connection: close, so clients move to other nodes."""

    def respond(self, method: str, path: str, headers: CIMultiDictProxy[str], peer: str) -> Answer:
        """Answer one request. Must not raise for anything a client can send."""

    def body_limit(self, method: str, path: str) -> int:
        """Asked only of a request with a body: how many bytes of it ``respond_with_body`` takes. 0: none,
        the body is not read; ``respond`` answers and the connection is closed."""

    def respond_with_body(
        self, method: str, path: str, headers: CIMultiDictProxy[str], peer: str, body: bytes | None
    ) -> Answer:
        """Answer a request ``body_limit`` took the body of, once it is complete; ``body`` is None when it
        was declared or grew larger than the limit (it is then not read on). The connection is closed after."""

    def bad_request(self, exc: HttpProcessingError, *, line_too_long: bool) -> Answer:
        """Answer a request that could not be parsed; the connection is closed after it."""

    def server_error(self) -> Answer:
        """Answer after respond() raised (a bug); the connection is closed after it."""


class Durability(Protocol):
    def flush(self) -> None:
        """Called once per event-loop pass, before the answers to that pass's requests are written."""

    def wait(self) -> Awaitable[None]:
        """Return once what the held answers stand for is safe (for the edge: clicks on disk)."""


class _NothingToKeep:
    """For a server whose answers stand for nothing that must be kept (the metrics port)."""

    def flush(self) -> None:
        pass

    async def wait(self) -> None:
        pass


def origin_form(target: str) -> str:
    """The path of an absolute-form request target (RFC 9112 §3.2.2): ``http://host/c/x?q`` is ``/c/x?q``.
    Any other target that does not start with ``/`` (``*``, an authority) is returned as it is."""
    scheme, sep, rest = target.partition("://")
    if not sep or scheme.lower() not in ("http", "https"):
        return target
    end = len(rest)
    for delimiter in "/?#":
        found = rest.find(delimiter)
        if 0 <= found < end:
            end = found
    path = rest[end:]
    return path if path.startswith("/") else "/" + path


class _IgnoredBody:
    """The flow control aiohttp's payload stream calls on while a request body arrives (a BaseProtocol's
    ``pause_reading``, ``resume_reading(resume_parser=...)`` and ``_reading_paused``). It is not needed: a
    body is either never read (the connection closes after answering its request) or read up to a
    ``Handler.body_limit`` far below the stream's own limit, by a connection that reads nothing else."""

    __slots__ = ()
    _reading_paused = False

    def pause_reading(self) -> None:
        pass

    def resume_reading(self, resume_parser: bool = True) -> None:
        pass


_IGNORED_BODY = _IgnoredBody()


class _Body:
    """A request whose body the handler takes, while the body arrives."""

    __slots__ = ("declared", "limit", "message", "path", "payload", "wire")

    def __init__(self, message: RawRequestMessage, path: str, payload: StreamReader, limit: int) -> None:
        self.message = message
        self.path = path
        self.payload = payload
        self.limit = limit
        # The parser has checked Content-Length (digits only, one value, not with chunked).
        self.declared = int(message.headers.get("Content-Length", "0"))
        self.wire = 0  # bytes read after the head: a chunked body's framing (and chunk extensions) counts


# Body bytes on the wire per byte of body taken: room for chunked framing, and a bound on chunk extensions
# and trailers, which never reach the payload stream.
_BODY_WIRE_FACTOR = 2


class HttpServer:
    """Listens, tracks connections, closes idle ones, and stops in order."""

    def __init__(self, handler: Handler, *, keepalive_timeout: float, durability: Durability | None = None) -> None:
        self.handler = handler
        self.durability: Durability = durability or _NothingToKeep()
        self.keepalive_timeout = keepalive_timeout
        self.connections: set[_Connection] = set()
        self.date_line = b""
        self.date_crlf = b""  # b"Date: ...\r\n\r\n", the end of every kept-alive answer
        # Exceptions caught at the protocol boundary: "parser" (answered 400) and "handler" (answered 500).
        self.errors = {"parser": 0, "handler": 0}
        # Every connection reads into this one buffer and copies out what it reads: one read is handled
        # completely before the next begins, and idle connections hold no buffer of their own.
        self.read_buffer = memoryview(bytearray(READ_SIZE))
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
        """Send these answers at the end of this event-loop pass, after ``Durability.flush``: the edge
        writes the clicks of every request read in the pass with one write() before answering any."""
        if not self._deferred:
            self._loop.call_soon(self._send_deferred)
        self._deferred.append((connection, out, close, wait))

    def _send_deferred(self) -> None:
        deferred, self._deferred = self._deferred, []
        if deferred:
            self.durability.flush()
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


class _Connection(asyncio.BufferedProtocol):
    __slots__ = (
        "_body",
        "_closing",
        "_deferred",
        "_eof",
        "_handler",
        "_parser",
        "_partial",
        "_peer",
        "_reading",
        "_server",
        "_stash",
        "_transport",
        "_waiter",
        "_write_paused",
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
        self._partial = b""  # the last bytes fed of a request head not yet complete
        self._stash = b""  # read and not yet parsed: waits (reading paused) until earlier answers are written
        self._deferred = False  # answers of this event-loop pass wait for HttpServer._send_deferred
        self._write_paused = False  # the client leaves more than WRITE_HIGH bytes of answers untaken
        self._reading = True
        self._eof = False  # the client has sent all it will (a half-close); answer it, then close
        self.closed_at = 0.0  # when close() was asked for
        self._waiter: asyncio.Task[None] | None = None
        self._body: _Body | None = None  # a request whose body is being read; the connection reads no other
        self.held: list[bytes] = []
        self.last_request = 0.0

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self._transport = cast(asyncio.Transport, transport)  # uvloop's transports do not subclass asyncio's
        self._transport.set_write_buffer_limits(high=WRITE_HIGH, low=WRITE_LOW)
        loop = asyncio.get_running_loop()
        peer = transport.get_extra_info("peername")
        self._peer = peer[0] if isinstance(peer, tuple) else ""
        self._parser = HttpRequestParser(
            _IGNORED_BODY,  # type: ignore[arg-type]  # the parser's payload streams use only its flow control
            loop,
            BODY_LIMIT,
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
        self._stash = b""
        self._body = None

    def eof_received(self) -> bool:
        self._eof = True
        self._continue()
        return True  # keep the transport open: what the client sent before its half-close is still answered

    def pause_writing(self) -> None:
        self._write_paused = True
        self._set_reading()

    def resume_writing(self) -> None:
        self._write_paused = False
        self._continue()

    def get_buffer(self, sizehint: int) -> memoryview:
        return self._server.read_buffer

    def buffer_updated(self, nbytes: int) -> None:
        if self._closing:
            if self._body is not None:
                self._read_body(bytes(self._server.read_buffer[:nbytes]))
            return
        data = bytes(self._server.read_buffer[:nbytes])
        self._stash = self._stash + data if self._stash else data
        if self._deferred or self._write_paused or self._waiter is not None:
            # A second read in one event-loop pass (uvloop reads on while data is there), or earlier answers
            # not yet written: it waits, and no more is read, until they are.
            self._set_reading()
            return
        self._work()

    def _work(self) -> None:
        try:
            self._parse_and_answer()
        except Exception:  # the protocol boundary: a bug of ours must not reach the event loop
            self._server.errors["handler"] += 1
            _errors_log.log(
                logging.ERROR, "error handling a request from %s; connection closed", self._peer, exc_info=True
            )
            self._stash = b""
            self.abort()
            return
        self._continue()

    def _parse_and_answer(self) -> None:
        """Parse what is stashed and answer it, up to this pass's share; the rest stays stashed."""
        assert self._parser is not None
        handler = self._handler
        server = self._server
        stash = self._stash
        size = len(stash)
        start = 0
        out: list[bytes] = []
        wait = close = False
        while start < size and len(out) < PIPELINE_ANSWERS:
            # One request head at a time: a pass answers no more than its share, and when the parser refuses
            # a request it has not also swallowed the valid ones pipelined before it in the same piece.
            stop = -1
            if start == 0 and self._partial:
                # The head an earlier piece began may end in this one's first bytes.
                found = (self._partial + stash[:3]).find(b"\r\n\r\n")
                if found >= 0:
                    stop = found + 4 - len(self._partial)
            if stop < 0:
                end = stash.find(b"\r\n\r\n", start)
                stop = size if end < 0 else end + 4
            piece = stash if stop - start == size else stash[start:stop]
            start = stop
            self._partial = b"" if piece.endswith(b"\r\n\r\n") else (self._partial + piece[-3:])[-3:]
            try:
                messages, _upgraded, _tail = self._parser.feed_data(piece)
            except Exception as exc:
                out.append(self._finish(self._unparsable(exc), "", close=True))
                close = True
                break
            for message, payload in messages:
                path = message.path
                if path[:1] != "/":
                    path = origin_form(path)
                close = message.should_close or message.upgrade or handler.draining
                if payload is not EMPTY_PAYLOAD:
                    close = True
                    limit = handler.body_limit(message.method, path)
                    if limit:
                        # Answered once its body is complete: what follows its head is read as the body.
                        self._body = _Body(message, path, payload, limit)
                        break
                try:
                    answer = handler.respond(message.method, path, message.headers, self._peer)
                except Exception:
                    answer, close = self._handler_failed(message), True
                head, body, wait_here = answer
                wait = wait or wait_here
                if close:
                    out.append(self._finish(answer, message.method, close=True))
                    break
                if message.version == _HTTP_1_0:
                    out.append(self._finish(answer, message.method, close=False, keep_alive=True))
                elif body and message.method != "HEAD":
                    out.append(head + server.date_crlf + body)
                else:
                    out.append(head + server.date_crlf)
            if close:
                break
        if close:
            self._closing = True  # read nothing more; answers deferred before these still go first
            self._stash = b""
            if self._body is not None:
                self.last_request = server._loop.time()  # the body has a keep-alive timeout to arrive in
                taken = self._take_body(stash[start:])
                if taken is None:
                    close = False  # not yet: the body is still coming
                else:
                    out.append(taken[0])
                    wait = wait or taken[1]
        else:
            self._stash = stash[start:] if start < size else b""
        if out:
            self.last_request = server._loop.time()
            self._deferred = True
            server.defer(self, out, close, wait)

    def _unparsable(self, exc: Exception) -> Answer:
        """The answer to a request the parser refused (the client's doing) or failed on (its own: counted)."""
        if isinstance(exc, HttpProcessingError):
            line_too_long = isinstance(exc, LineTooLong) and exc.args[1] == MAX_LINE_SIZE
            log.debug("unparsable request from %s: %s", self._peer, exc)
            return self._handler.bad_request(exc, line_too_long=line_too_long)
        self._server.errors["parser"] += 1
        _errors_log.log(logging.ERROR, "the HTTP parser failed on a request from %s", self._peer, exc_info=True)
        return self._handler.bad_request(_PARSER_FAILED, line_too_long=False)

    def _handler_failed(self, message: RawRequestMessage) -> Answer:
        """The answer after the handler raised (a bug): counted, logged, and the connection closed."""
        self._server.errors["handler"] += 1
        _errors_log.log(logging.ERROR, "error answering %s %.200s", message.method, message.path, exc_info=True)
        return self._handler.server_error()

    def _read_body(self, data: bytes) -> None:
        taken = self._take_body(data)
        if taken is not None:
            self._deferred = True
            self._server.defer(self, [taken[0]], True, taken[1])

    def _take_body(self, data: bytes) -> tuple[bytes, bool] | None:
        """Feed what has come of the body being read. Once it is complete, or too large, or unparsable: its
        request's answer (closing the connection) and whether that waits (``Answer``'s ``wait``)."""
        body = self._body
        assert body is not None and self._parser is not None
        payload, limit = body.payload, body.limit
        body.wire += len(data)
        content: bytes | None = None
        too_large = body.declared > limit or body.wire > limit * _BODY_WIRE_FACTOR
        if data and not too_large:
            try:
                self._parser.feed_data(data)  # into the payload stream; whatever follows the body is never read
            except Exception as exc:
                if not payload.is_eof():  # the body itself cannot be parsed (a chunk size that is not hex)
                    self._body = None
                    answer = self._unparsable(exc)
                    return self._finish(answer, body.message.method, close=True), answer[2]
        if payload.is_eof():
            content = payload.read_nowait(-1)
            if len(content) > limit:
                content = None
        elif not too_large and payload.total_bytes <= limit:
            return None
        self._body = None
        message = body.message
        try:
            answer = self._handler.respond_with_body(message.method, body.path, message.headers, self._peer, content)
        except Exception:
            answer = self._handler_failed(message)
        return self._finish(answer, message.method, close=True), answer[2]

    def send(self, out: list[bytes], close: bool, wait: bool) -> None:
        self._deferred = False
        if self._transport is None or self._transport.is_closing():
            return
        if wait or self.held:
            self._hold(out, close)
        else:
            self._send(out, close)
        self._continue()

    def _continue(self) -> None:
        """Go on with what is stashed if nothing holds it back; read again once it is all parsed, or close
        once everything a half-closed client sent is answered."""
        busy = self._deferred or self._waiter is not None
        if self._stash and not (busy or self._closing or self._write_paused):
            self._work()
        elif self._eof and not (busy or self._stash):
            self.close()
        else:
            self._set_reading()

    def _set_reading(self) -> None:
        want = not (self._stash or self._write_paused or self._waiter is not None)
        transport = self._transport
        if want is not self._reading and transport is not None and not transport.is_closing():
            self._reading = want
            if want:
                transport.resume_reading()
            else:
                transport.pause_reading()

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
            # No more requests until these are answered: the held list stays one pass long.
            self._waiter = asyncio.get_running_loop().create_task(self._release())
            self._set_reading()

    async def _release(self) -> None:
        try:
            while self.held:
                count = len(self.held)
                await self._server.durability.wait()  # covers every answer held before it was called
                out, self.held = self.held[:count], self.held[count:]
                if self._transport is not None and not self._transport.is_closing():
                    self._transport.writelines(out)
        finally:
            self._waiter = None
        if self._closing and self._body is None:
            self.close()
        else:
            self._continue()

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
