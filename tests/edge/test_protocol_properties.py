"""Properties of the edge's HTTP layer under random and hostile request streams, over a real socket.

Each example is a stream of requests (valid ones of every kind the edge answers, requests with bodies,
random bytes, and valid requests with a byte changed), split at random byte boundaries, written to a real
edge (its own event loop, uvloop, in a thread) and half-closed; everything the edge sends back is read
until it closes. What must hold, whatever the stream:

- every answer is well-formed HTTP/1.1 with a Content-Length that matches its body;
- the requests before the first hostile one each get exactly their answer, in order;
- a request the edge cannot parse gets a 4xx, which like every answer saying ``Connection: close`` is the
  last one;
- the edge never hangs (it closes within a deadline once the client has said all it will);
- nothing escapes the HTTP layer (no exception counted, nothing logged at error level);
- every 302 recorded its click, and nothing else recorded one;
- no connection outlives its client, and none held more than one read of unparsed input.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import socket
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
import uvloop
from hypothesis import HealthCheck, given, note, settings
from hypothesis import strategies as st

from edge.config import EdgeConfig
from edge.main import RunningEdge, shutdown, start
from edge.protocol import READ_SIZE
from links import keys
from tests.conftest import INGEST_SECRET

DESTINATION = "https://shop.example.com/p?q=1"
DEADLINE = 10.0


@dataclass
class Edge:
    running: RunningEdge
    loop: asyncio.AbstractEventLoop
    tokens: list[str]
    errors: list[logging.LogRecord]
    max_stash: list[int]

    @property
    def port(self) -> int:
        return self.running.port


class _Errors(logging.Handler):
    def __init__(self, into: list[logging.LogRecord]) -> None:
        super().__init__(logging.ERROR)
        self.into = into

    def emit(self, record: logging.LogRecord) -> None:
        self.into.append(record)


@pytest.fixture(scope="module")
def edge(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Edge]:
    data_dir: Path = tmp_path_factory.mktemp("edge")
    keys.load_or_create(data_dir / "keys.json")
    codec = keys.load(data_dir / "keys.json").codec()
    tokens = [
        codec.mint(DESTINATION, campaign_id=9, link_id=i, contact_id=i + 1, sent_at=1_790_000_000) for i in range(3)
    ]
    config = EdgeConfig(
        port=0,
        data_dir=data_dir,
        collector_url="http://127.0.0.1:9",  # nobody listens: clicks stay spooled
        ingest_secret=INGEST_SECRET,
        keepalive_timeout=5.0,
    )
    loop = uvloop.new_event_loop()
    ready = threading.Event()
    holder: list[RunningEdge] = []
    thread = threading.Thread(target=loop.run_forever, daemon=True)
    thread.start()

    async def begin() -> None:
        holder.append(await start(config))
        ready.set()

    asyncio.run_coroutine_threadsafe(begin(), loop).result(30)
    errors: list[logging.LogRecord] = []
    handler = _Errors(errors)
    logging.getLogger().addHandler(handler)
    try:
        yield Edge(holder[0], loop, tokens, errors, [0])
    finally:
        logging.getLogger().removeHandler(handler)
        asyncio.run_coroutine_threadsafe(shutdown(holder[0], grace=0, timeout=0), loop).result(30)
        loop.call_soon_threadsafe(loop.stop)
        thread.join(10)
        loop.close()


# -- what a client sends ------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Request:
    raw: bytes
    status: int | None  # None: hostile, its answer (if any) is not predicted
    closes: bool = False  # the connection closes after answering it
    head: bool = False


header_value = st.text(
    st.characters(min_codepoint=0x20, max_codepoint=0xFF, exclude_characters="\x7f"), max_size=40
).map(lambda s: s.strip())


@st.composite
def valid_request(draw: st.DrawFn, tokens: list[str]) -> Request:
    method = draw(st.sampled_from(["GET", "HEAD"]))
    kind = draw(st.sampled_from(["token", "healthz", "missing", "tampered"]))
    token = draw(st.sampled_from(tokens))
    path, status = {
        "token": (f"/c/{token}", 302),
        "healthz": ("/healthz", 200),
        "missing": ("/nothing/here", 404),
        "tampered": (f"/c/{token[:-4]}AAAA", 404),
    }[kind]
    if draw(st.booleans()):
        path = "http://t.example.com" + path  # absolute form
    version = draw(st.sampled_from(["1.1", "1.0"]))
    headers = [] if version == "1.0" else ["Host: t.example.com"]
    closes = version == "1.0"
    if version == "1.0" and draw(st.booleans()):
        headers.append("Connection: keep-alive")
        closes = False
    elif version == "1.1" and draw(st.integers(0, 5)) == 0:
        headers.append("Connection: close")
        closes = True
    # aiohttp refuses a repeated singleton header (User-Agent, Referer): only X-Forwarded-For may repeat here.
    names = draw(st.lists(st.sampled_from(["User-Agent", "Accept", "Referer"]), max_size=3, unique=True))
    names += ["X-Forwarded-For"] * draw(st.integers(0, 2))
    for name in names:
        headers.append(f"{name}: {draw(header_value)}")
    body = b""
    if draw(st.integers(0, 6)) == 0:
        content = draw(st.binary(max_size=300))
        if draw(st.booleans()):
            headers.append(f"Content-Length: {len(content)}")
            body = content
        else:
            headers.append("Transfer-Encoding: chunked")
            body = (f"{len(content):x}\r\n".encode() + content + b"\r\n" if content else b"") + b"0\r\n\r\n"
        closes = closes or bool(content) or "chunked" in headers[-1]  # it never reads a body: answers, then closes
    head = "".join(f"{line}\r\n" for line in [f"{method} {path} HTTP/{version}", *headers]) + "\r\n"
    return Request(head.encode("latin-1") + body, status, closes, head=method == "HEAD")


@st.composite
def hostile_request(draw: st.DrawFn, tokens: list[str]) -> Request:
    if draw(st.booleans()):
        return Request(draw(st.binary(min_size=1, max_size=80)), None)
    raw = bytearray(draw(valid_request(tokens)).raw)
    for _ in range(draw(st.integers(1, 3))):
        at = draw(st.integers(0, len(raw) - 1))
        raw[at] = draw(st.integers(0, 255))
    return Request(bytes(raw), None)


@st.composite
def stream(draw: st.DrawFn, tokens: list[str]) -> tuple[list[Request], list[bytes]]:
    requests = draw(
        st.lists(
            st.one_of(valid_request(tokens), valid_request(tokens), hostile_request(tokens)), min_size=1, max_size=24
        )
    )
    data = b"".join(r.raw for r in requests)
    cuts = sorted(set(draw(st.lists(st.integers(1, max(1, len(data) - 1)), max_size=6))))
    pieces = [data[a:b] for a, b in zip([0, *cuts], [*cuts, len(data)], strict=True) if data[a:b]]
    return requests, pieces


# -- what comes back ---------------------------------------------------------------------------------------


def exchange(port: int, pieces: list[bytes]) -> bytes:
    with socket.create_connection(("127.0.0.1", port), timeout=DEADLINE) as sock:
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        for piece in pieces:
            try:
                sock.sendall(piece)
            except (BrokenPipeError, ConnectionResetError):
                break  # the edge closed after an answer that ends the connection
        with contextlib.suppress(OSError):
            sock.shutdown(socket.SHUT_WR)
        received = bytearray()
        try:
            while chunk := sock.recv(65536):  # a timeout here is a hang: the test fails
                received += chunk
        except ConnectionResetError:
            pass  # closed with unread input (a body, or what followed the answer that closed it)
        return bytes(received)


def parse_answers(data: bytes, heads: list[bool]) -> list[tuple[int, dict[str, str]]]:
    """Split what the edge sent into answers; fails the test on anything that is not well-formed.
    ``heads`` says which of the first answers are for HEAD requests (no body follows their headers); for
    the answers after those, whether a body follows tells."""
    answers: list[tuple[int, dict[str, str]]] = []
    pos = 0
    while pos < len(data):
        end = data.index(b"\r\n\r\n", pos)
        lines = data[pos:end].decode("latin-1").split("\r\n")
        version, status, _ = lines[0].split(" ", 2)
        assert version == "HTTP/1.1", lines[0]
        headers = {}
        for line in lines[1:]:
            name, value = line.split(": ", 1)
            headers[name.lower()] = value
        length = int(headers["content-length"])
        pos = end + 4
        if len(answers) < len(heads):
            is_head = heads[len(answers)]
        else:
            is_head = pos == len(data) or data.startswith(b"HTTP/1.1 ", pos)
        if not is_head:
            assert len(data) - pos >= length, "an answer is cut short"
            pos += length
        answers.append((int(status), headers))
    return answers


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(data=st.data())
def test_any_request_stream_gets_well_formed_answers_in_order(edge: Edge, data: st.DataObject) -> None:
    requests, pieces = data.draw(stream(edge.tokens))
    redirects = edge.running.handler.metrics.outcome["redirect"]
    recorded_before = redirects.value
    errors_before = dict(edge.running.http.errors)
    logged_before = len(edge.errors)

    received = exchange(edge.port, pieces)
    note(f"pieces: {pieces!r}")
    note(f"received: {received!r}")

    # Which answers are for HEADs is known up to the first hostile request (it may yield any number of
    # answers, or none); from there on it is told by whether a body follows.
    known = next((i for i, r in enumerate(requests) if r.status is None), len(requests))
    answers = parse_answers(received, [r.head for r in requests[:known]])
    predicted = []
    for request in requests:
        if request.status is None:
            break
        predicted.append(request.status)
        if request.closes:
            break
    hostile_follows = len(predicted) < len(requests) and requests[len(predicted)].status is None
    assert [status for status, _ in answers[: len(predicted)]] == predicted
    if not hostile_follows:
        assert len(answers) == len(predicted)
    for status, _ in answers[len(predicted) :]:
        assert status in (200, 302, 400, 404, 405, 414, 431), status
    for i, (status, headers) in enumerate(answers):
        # An answer that closes the connection (the parser's refusals among them) is the last one.
        if headers.get("connection") == "close":
            assert i == len(answers) - 1, "an answer after one that closed the connection"
        if status == 302:
            assert headers["location"] == DESTINATION
    redirected = sum(1 for status, _ in answers if status == 302)
    assert redirects.value - recorded_before == redirected  # every 302 recorded its click, and only those
    assert edge.running.http.errors == errors_before
    assert len(edge.errors) == logged_before, [r.getMessage() for r in edge.errors[logged_before:]]


def test_no_connection_outlives_its_client(edge: Edge) -> None:
    # Runs after the property above (same module, file order): every one of its connections is gone.
    async def open_connections() -> int:
        return len(edge.running.http.connections)

    assert asyncio.run_coroutine_threadsafe(open_connections(), edge.loop).result(10) == 0
    assert READ_SIZE == 16384
