"""What edge/protocol.py relies on in aiohttp's private HTTP parser interface. pyproject.toml pins the aiohttp
minor version these checks passed on; when an upgrade changes any of it, this file fails and says what.

The edge feeds ``aiohttp.http_parser.HttpRequestParser`` itself and answers from its messages, so it
depends on: the constructor's arguments, ``feed_data``'s result shape, the message fields it reads,
``EMPTY_PAYLOAD`` marking a request without a body, the exceptions it raises (``HttpProcessingError``,
``LineTooLong`` with the limit as its second argument), and the flow-control calls a body's payload stream
makes on the protocol object it is given (edge/protocol.py's ``_IgnoredBody`` answers exactly those). For
a body the handler takes (an unsubscribe's POST), it relies on the payload stream getting the body from
later ``feed_data`` calls, ``is_eof()`` from the last byte on (Content-Length or chunked), ``total_bytes``
counting what has come, and ``read_nowait(-1)`` giving all of it back.
"""

from __future__ import annotations

import asyncio
import tomllib
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from aiohttp import http_parser
from aiohttp.http_exceptions import HttpProcessingError, LineTooLong
from aiohttp.streams import EMPTY_PAYLOAD, StreamReader
from multidict import CIMultiDictProxy

from edge.protocol import _IGNORED_BODY, BODY_LIMIT, MAX_FIELD_SIZE, MAX_HEADERS, MAX_LINE_SIZE

ROOT = Path(__file__).resolve().parents[2]


class StrictProtocol:
    """Records what a payload stream does with its protocol, and fails on anything else."""

    def __init__(self) -> None:
        self.calls: list[tuple[str, dict[str, Any]]] = []

    @property
    def _reading_paused(self) -> bool:
        self.calls.append(("_reading_paused", {}))
        return False

    def pause_reading(self) -> None:
        self.calls.append(("pause_reading", {}))

    def resume_reading(self, **kwargs: Any) -> None:
        self.calls.append(("resume_reading", kwargs))

    def __getattr__(self, name: str) -> Any:
        raise AssertionError(
            f"aiohttp's payload stream now uses protocol.{name}: edge/protocol.py's _IgnoredBody lacks it"
        )


def new_parser(protocol: object) -> Any:
    return http_parser.HttpRequestParser(
        protocol,  # type: ignore[arg-type]
        asyncio.get_running_loop(),
        BODY_LIMIT,
        max_line_size=MAX_LINE_SIZE,
        max_field_size=MAX_FIELD_SIZE,
        max_headers=MAX_HEADERS,
    )


def test_aiohttp_is_the_minor_version_the_pin_names() -> None:
    pins = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["dependencies"]
    (pin,) = [p for p in pins if p.startswith("aiohttp")]
    low, high = (part.strip() for part in pin.removeprefix("aiohttp").split(","))
    tested = low.removeprefix(">=")
    assert high == f"<{tested.split('.')[0]}.{int(tested.split('.')[1]) + 1}", f"pin one minor version: {pin}"
    assert aiohttp.__version__.startswith(tested + "."), (aiohttp.__version__, pin)


async def test_the_c_parser_is_the_one_in_use() -> None:
    # The pure-Python fallback is slower by far and differs in details (which errors, when).
    assert http_parser.HttpRequestParser is http_parser.HttpRequestParserC


async def test_messages_carry_what_the_edge_reads() -> None:
    parser = new_parser(_IGNORED_BODY)
    result = parser.feed_data(
        b"GET /c/abc?x=1 HTTP/1.1\r\nHost: a\r\nX-Forwarded-For: 1.2.3.4\r\nX-Forwarded-For: 5.6.7.8\r\n\r\n"
        b"HEAD http://t.example/c/d HTTP/1.0\r\n\r\n"
    )
    assert isinstance(result, tuple) and len(result) == 3
    messages, upgraded, tail = result
    assert upgraded is False and tail == b""
    (first, payload), (second, payload2) = messages
    assert (first.method, first.path, first.version) == ("GET", "/c/abc?x=1", (1, 1))
    assert isinstance(first.headers, CIMultiDictProxy)
    assert first.headers.getall("x-forwarded-for") == ["1.2.3.4", "5.6.7.8"]
    assert first.should_close is False and first.upgrade is False
    assert payload is EMPTY_PAYLOAD and payload2 is EMPTY_PAYLOAD
    # Absolute-form comes as written: edge/protocol.py takes its path.
    assert (second.method, second.path, second.version, second.should_close) == (
        "HEAD",
        "http://t.example/c/d",
        (1, 0),
        True,
    )
    closing = new_parser(_IGNORED_BODY).feed_data(b"GET /x HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n")
    assert closing[0][0][0].should_close
    upgrade = new_parser(_IGNORED_BODY).feed_data(
        b"GET /x HTTP/1.1\r\nHost: a\r\nConnection: upgrade\r\nUpgrade: websocket\r\n\r\n"
    )
    assert upgrade[0][0][0].upgrade is True


async def test_an_incomplete_request_yields_nothing_until_it_is_complete() -> None:
    parser = new_parser(_IGNORED_BODY)
    assert not parser.feed_data(b"GET /c/abc HTTP/1.1\r\nHo")[0]
    (message, _), *_ = parser.feed_data(b"st: a\r\n\r\n")[0]
    assert message.path == "/c/abc"


@pytest.mark.parametrize(
    "body",
    [
        b"Content-Length: 10\r\n\r\n0123456789",
        b"Content-Length: 5\r\n\r\n01",  # the rest never comes
        b"Content-Length: 200000\r\n\r\n" + b"x" * 200_000,  # beyond the limit: the stream pauses
        b"Transfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n",
    ],
    ids=["complete", "partial", "beyond-limit", "chunked"],
)
async def test_a_body_calls_only_the_flow_control_the_edge_stubs(body: bytes) -> None:
    protocol = StrictProtocol()
    messages, _, _ = new_parser(protocol).feed_data(b"GET /c/abc HTTP/1.1\r\nHost: a\r\n" + body)
    ((_, payload),) = messages
    assert payload is not EMPTY_PAYLOAD and isinstance(payload, StreamReader)
    for name, kwargs in protocol.calls:
        assert name in ("_reading_paused", "pause_reading", "resume_reading"), name
        assert set(kwargs) <= {"resume_parser"}, kwargs
    # And the edge's own stub takes the same calls without a complaint.
    new_parser(_IGNORED_BODY).feed_data(b"GET /c/abc HTTP/1.1\r\nHost: a\r\n" + body)


async def test_bad_requests_raise_http_processing_errors() -> None:
    for bad in (
        b"GET /x HTTP/1.1\r\nBad Header\r\n\r\n",
        b"GET /x HTTP/1.1\r\n\r\n",  # no Host
        b"\x00\x01\x02\r\n\r\n",
        b"GET /x HTTP/1.1\r\nHost: a\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\n",
    ):
        with pytest.raises(HttpProcessingError):
            new_parser(_IGNORED_BODY).feed_data(bad)
    with pytest.raises(LineTooLong) as too_long:
        new_parser(_IGNORED_BODY).feed_data(b"GET /" + b"a" * MAX_LINE_SIZE + b" HTTP/1.1\r\n\r\n")
    assert too_long.value.args[1] == MAX_LINE_SIZE  # how edge/protocol.py tells an oversized token (414)
    with pytest.raises(HttpProcessingError) as too_many:
        new_parser(_IGNORED_BODY).feed_data(b"GET /x HTTP/1.1\r\n" + b"A: b\r\n" * (MAX_HEADERS + 1) + b"\r\n")
    assert not (isinstance(too_many.value, LineTooLong) and too_many.value.args[1] == MAX_LINE_SIZE)


@pytest.mark.parametrize(
    ("head", "pieces"),
    [
        ("Content-Length: 26", [b"List-Unsub", b"scribe=One-", b"Click"]),
        ("Transfer-Encoding: chunked", [b"a\r\nList-Unsub\r\n", b"b\r\nscribe=One-\r\n5\r\n", b"Click\r\n0\r\n\r\n"]),
    ],
    ids=["content-length", "chunked"],
)
async def test_a_body_fed_later_reaches_the_payload_stream_which_ends_after_its_last_byte(
    head: str, pieces: list[bytes]
) -> None:
    parser = new_parser(_IGNORED_BODY)
    ((message, payload),), _, _ = parser.feed_data(f"POST /u/abc HTTP/1.1\r\nHost: a\r\n{head}\r\n\r\n".encode())
    assert message.method == "POST" and isinstance(payload, StreamReader) and payload is not EMPTY_PAYLOAD
    assert not payload.is_eof() and payload.total_bytes == 0
    for piece in pieces[:-1]:
        assert not parser.feed_data(piece)[0]
        assert not payload.is_eof()
    assert payload.total_bytes == len(b"List-Unsubscribe=One-")
    # What follows the body is parsed as the next request: the edge never reads it, but it must not leak
    # into the body.
    (next_message, _), *_ = parser.feed_data(pieces[-1] + b"GET /x HTTP/1.1\r\nHost: a\r\n\r\n")[0]
    assert next_message.path == "/x"
    assert payload.is_eof() and payload.total_bytes == 26
    assert payload.read_nowait(-1) == b"List-Unsubscribe=One-Click"
    assert payload.read_nowait(-1) == b""


async def test_a_request_with_an_empty_body_has_no_payload_stream() -> None:
    # POST with Content-Length: 0 (or none) is answered by Handler.respond, like a GET: nothing to read.
    for head in (b"Content-Length: 0\r\n", b""):
        ((_, payload),), _, _ = new_parser(_IGNORED_BODY).feed_data(
            b"POST /u/abc HTTP/1.1\r\nHost: a\r\n" + head + b"\r\n"
        )
        assert payload is EMPTY_PAYLOAD


async def test_a_bad_chunk_raises_before_the_payload_ends() -> None:
    # edge/protocol.py answers 400 when the parser raises before the body is complete, and answers the body
    # when the error is in what follows it.
    parser = new_parser(_IGNORED_BODY)
    ((_, payload),), _, _ = parser.feed_data(b"POST /u/abc HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n")
    with pytest.raises(HttpProcessingError):
        parser.feed_data(b"zz\r\n")
    assert not payload.is_eof()
    parser = new_parser(_IGNORED_BODY)
    ((_, payload),), _, _ = parser.feed_data(b"POST /u/abc HTTP/1.1\r\nHost: a\r\nContent-Length: 3\r\n\r\n")
    with pytest.raises(HttpProcessingError):
        parser.feed_data(b"abc\x00 garbage\r\n\r\n")
    assert payload.is_eof() and payload.read_nowait(-1) == b"abc"
