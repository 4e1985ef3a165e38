"""The HTTP layer (edge/protocol.py) alone, over an in-memory transport, as uvicorn tests its protocols: what
it writes, when it reads, and in which order it makes answers durable and sends them. The socket-level tests
(test_protocol.py) cover the same behaviour end to end on uvloop."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from aiohttp.http_exceptions import HttpProcessingError
from multidict import CIMultiDictProxy

from edge.protocol import PIPELINE_ANSWERS, READ_SIZE, Answer, HttpServer, _Connection

REQUEST = b"GET /x HTTP/1.1\r\nHost: a\r\n\r\n"


class MemoryTransport(asyncio.Transport):
    """Records what the protocol writes and whether it wants to read."""

    def __init__(self, events: list[str]) -> None:
        super().__init__()
        self.events = events
        self.written = bytearray()
        self.reading = True
        self.closed = False

    def write(self, data: bytes | bytearray | memoryview) -> None:
        self.events.append("write")
        self.written += data

    def writelines(self, list_of_data: Any) -> None:
        self.events.append("write")
        for data in list_of_data:
            self.written += data

    def get_write_buffer_size(self) -> int:
        return 0

    def set_write_buffer_limits(self, high: int | None = None, low: int | None = None) -> None:
        pass

    def pause_reading(self) -> None:
        self.reading = False

    def resume_reading(self) -> None:
        self.reading = True

    def is_closing(self) -> bool:
        return self.closed

    def close(self) -> None:
        self.closed = True

    def abort(self) -> None:
        self.closed = True

    def get_extra_info(self, name: str, default: Any = None) -> Any:
        return ("127.0.0.1", 40000) if name == "peername" else default

    def answers(self) -> list[int]:
        return [
            int(line.split(b" ")[1]) for line in bytes(self.written).split(b"\r\n") if line.startswith(b"HTTP/1.1 ")
        ]


class Handler:
    draining = False

    def __init__(self, events: list[str], *, wait: bool = False, fail_on: str = "", takes: int = 0) -> None:
        self.events = events
        self.wait = wait
        self.fail_on = fail_on
        self.takes = takes  # how many bytes of a POST's body it takes

    def respond(self, method: str, path: str, headers: CIMultiDictProxy[str], peer: str) -> Answer:
        if path == self.fail_on:
            raise RuntimeError("a bug")
        self.events.append("respond")
        return b"HTTP/1.1 204 No Content\r\nContent-Length: 0\r\n", b"", self.wait

    def body_limit(self, method: str, path: str) -> int:
        return self.takes if method == "POST" else 0

    def respond_with_body(
        self, method: str, path: str, headers: CIMultiDictProxy[str], peer: str, body: bytes | None
    ) -> Answer:
        if path == self.fail_on:
            raise RuntimeError("a bug")
        self.events.append(f"respond with {body!r}")
        return b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n", b"", self.wait

    def bad_request(self, exc: HttpProcessingError, *, line_too_long: bool) -> Answer:
        return b"HTTP/1.1 400 Bad Request\r\nContent-Length: 0\r\n", b"", False

    def server_error(self) -> Answer:
        return b"HTTP/1.1 500 Internal Server Error\r\nContent-Length: 0\r\n", b"", False


class Durability:
    def __init__(self, events: list[str]) -> None:
        self.events = events
        self.released = asyncio.Event()

    def flush(self) -> None:
        self.events.append("flush")

    async def wait(self) -> None:
        await self.released.wait()
        self.events.append("durable")


def connect(
    handler: Handler, durability: Durability, events: list[str]
) -> tuple[HttpServer, _Connection, MemoryTransport]:
    server = HttpServer(handler, keepalive_timeout=60, durability=durability)
    connection = _Connection(server)
    transport = MemoryTransport(events)
    connection.connection_made(transport)
    return server, connection, transport


def receive(connection: _Connection, data: bytes) -> None:
    """What the event loop does when ``data`` arrives: fill the shared buffer, then say how much."""
    for start in range(0, len(data), READ_SIZE):
        piece = data[start : start + READ_SIZE]
        connection.get_buffer(-1)[: len(piece)] = piece
        connection.buffer_updated(len(piece))


async def next_pass() -> None:
    await asyncio.sleep(0)  # one turn of the event loop: the answers deferred to the end of the pass go out


async def test_a_pass_makes_its_answers_durable_before_it_sends_them_and_answers_a_bounded_share() -> None:
    events: list[str] = []
    _, connection, transport = connect(Handler(events), Durability(events), events)
    receive(connection, REQUEST * 40)
    assert events.count("respond") == PIPELINE_ANSWERS and "write" not in events  # nothing sent yet
    assert not transport.reading  # the rest of the read waits, unparsed
    await next_pass()
    first = events.index("write")
    assert events[:first] == ["respond"] * PIPELINE_ANSWERS + ["flush"]  # durable first, then sent
    assert transport.answers() == [204] * PIPELINE_ANSWERS
    for _ in range(3):
        await next_pass()
    assert transport.answers() == [204] * 40 and transport.reading
    assert events.count("flush") == 3  # one per pass: 16, 16, 8


async def test_nothing_more_is_parsed_while_the_client_leaves_answers_untaken() -> None:
    events: list[str] = []
    _, connection, transport = connect(Handler(events), Durability(events), events)
    connection.pause_writing()  # the transport's buffer is over its high-water mark
    receive(connection, REQUEST * 3)
    await next_pass()
    assert events == [] and not transport.reading
    connection.resume_writing()
    await next_pass()
    assert transport.answers() == [204, 204, 204] and transport.reading


async def test_answers_that_ask_to_wait_are_held_until_durable_and_reading_stops_meanwhile() -> None:
    events: list[str] = []
    durability = Durability(events)
    _, connection, transport = connect(Handler(events, wait=True), durability, events)
    receive(connection, REQUEST * 2)
    await next_pass()
    assert transport.written == b"" and not transport.reading
    durability.released.set()
    for _ in range(3):
        await next_pass()
    assert transport.answers() == [204, 204] and events.index("durable") < events.index("write")
    assert transport.reading


async def test_answers_held_for_a_connection_that_is_lost_are_dropped_and_their_wait_cancelled() -> None:
    events: list[str] = []
    durability = Durability(events)
    server, connection, transport = connect(Handler(events, wait=True), durability, events)
    receive(connection, REQUEST * 2)
    await next_pass()
    await next_pass()  # the task holding the answers is under way: it waits for durability
    waiter = connection._waiter
    assert waiter is not None and not waiter.done() and len(connection.held) == 2
    transport.closed = True
    connection.connection_lost(ConnectionResetError())  # the client is gone (or the server aborted it)
    await next_pass()
    assert waiter.cancelled() and connection._waiter is None  # no task left waiting for a client that left
    assert connection.held == [] and connection not in server.connections
    durability.released.set()
    for _ in range(3):
        await next_pass()
    assert "durable" not in events and transport.written == b""  # nobody waited for it; nothing was written


async def test_a_half_closed_client_gets_its_answers_then_the_connection_closes() -> None:
    events: list[str] = []
    _, connection, transport = connect(Handler(events), Durability(events), events)
    receive(connection, REQUEST * 20)
    assert connection.eof_received() is True  # keep the transport open to write what is due
    for _ in range(3):
        await next_pass()
    assert transport.answers() == [204] * 20 and transport.closed


async def test_a_handler_bug_is_a_500_that_closes_and_is_counted() -> None:
    events: list[str] = []
    server, connection, transport = connect(Handler(events, fail_on="/bug"), Durability(events), events)
    receive(connection, REQUEST + b"GET /bug HTTP/1.1\r\nHost: a\r\n\r\n" + REQUEST)
    await next_pass()
    assert transport.answers() == [204, 500] and transport.closed
    assert server.errors == {"parser": 0, "handler": 1}


async def test_a_parser_failure_is_a_400_that_closes_and_is_counted() -> None:
    events: list[str] = []
    server, connection, transport = connect(Handler(events), Durability(events), events)

    class Broken:
        def feed_data(self, data: bytes) -> Any:
            raise TypeError("the parser's own bug")

    connection._parser = Broken()  # type: ignore[assignment]
    receive(connection, REQUEST)
    await next_pass()
    assert transport.answers() == [400] and transport.closed
    assert server.errors == {"parser": 1, "handler": 0}


def post(body: bytes, path: str = "/x") -> bytes:
    return f"POST {path} HTTP/1.1\r\nHost: a\r\nContent-Length: {len(body)}\r\n\r\n".encode() + body


async def test_a_body_that_arrives_a_byte_at_a_time_is_answered_once_complete_then_the_connection_closes() -> None:
    events: list[str] = []
    _, connection, transport = connect(Handler(events, takes=64), Durability(events), events)
    request = post(b"a=1&b=2")
    receive(connection, REQUEST + request[:-7])  # a GET, then the POST's head
    await next_pass()
    assert transport.answers() == [204] and transport.reading and not transport.closed
    for byte in request[-7:-1]:
        receive(connection, bytes([byte]))
        await next_pass()
    assert transport.answers() == [204] and transport.reading  # not yet: one byte to come
    receive(connection, request[-1:] + REQUEST)  # the last byte, and a request never read
    await next_pass()
    assert events == ["respond", "flush", "write", "respond with b'a=1&b=2'", "flush", "write"]
    assert transport.answers() == [204, 200] and transport.closed
    assert b"Connection: close\r\n" in transport.written.split(b"HTTP/1.1 200 ")[1]


async def test_a_body_is_read_while_earlier_answers_are_held_and_answered_after_them() -> None:
    # The answer to a GET before the POST waits for durability (fsync=always); meanwhile nothing is read.
    # Once it is out, the POST's body is read, not given up on, and its answer follows.
    events: list[str] = []
    durability = Durability(events)
    _, connection, transport = connect(Handler(events, wait=True, takes=64), durability, events)
    request = post(b"a=1")
    receive(connection, REQUEST + request[:-3])
    await next_pass()
    assert transport.written == b"" and not transport.reading
    durability.released.set()
    for _ in range(3):
        await next_pass()
    assert transport.answers() == [204] and transport.reading and not transport.closed
    receive(connection, request[-3:])
    for _ in range(3):
        await next_pass()
    assert transport.answers() == [204, 200] and transport.closed
    assert events.count("durable") == 2 and events[-1] == "write"


@pytest.mark.parametrize(
    ("head", "body", "expected"),
    [
        ("Content-Length: 65", b"x" * 65, "respond with None"),  # declared too large: not read
        ("Transfer-Encoding: chunked", b"41\r\n" + b"x" * 65 + b"\r\n0\r\n\r\n", "respond with None"),
        ("Transfer-Encoding: chunked", b"1;" + b"e" * 200, "respond with None"),  # extensions: wire bound
        ("Transfer-Encoding: chunked", b"40\r\n" + b"x" * 64 + b"\r\n0\r\n\r\n", f"respond with {b'x' * 64!r}"),
        ("Transfer-Encoding: chunked", b"0\r\n\r\n", "respond with b''"),
    ],
    ids=["declared-too-large", "chunked-too-large", "chunk-extensions", "chunked-at-the-limit", "chunked-empty"],
)
async def test_a_body_is_taken_up_to_the_limit_only(head: str, body: bytes, expected: str) -> None:
    events: list[str] = []
    _, connection, transport = connect(Handler(events, takes=64), Durability(events), events)
    receive(connection, f"POST /x HTTP/1.1\r\nHost: a\r\n{head}\r\n\r\n".encode() + body)
    await next_pass()
    assert events[0] == expected and transport.answers() == [200] and transport.closed


async def test_an_unparsable_body_is_a_400_and_what_follows_a_complete_one_is_never_parsed() -> None:
    events: list[str] = []
    server, connection, transport = connect(Handler(events, takes=64), Durability(events), events)
    receive(connection, b"POST /x HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n")
    await next_pass()
    assert events == ["flush", "write"] and transport.answers() == [400] and transport.closed
    events.clear()
    server, connection, transport = connect(Handler(events, takes=64), Durability(events), events)
    receive(connection, post(b"a=1") + b"\x00 garbage\r\n\r\n")
    await next_pass()
    assert events[0] == "respond with b'a=1'" and transport.answers() == [200] and transport.closed
    assert server.errors == {"parser": 0, "handler": 0}


async def test_a_handler_bug_answering_a_body_is_a_500_that_closes_and_is_counted() -> None:
    events: list[str] = []
    server, connection, transport = connect(Handler(events, fail_on="/bug", takes=64), Durability(events), events)
    receive(connection, post(b"a=1", "/bug"))
    await next_pass()
    assert transport.answers() == [500] and transport.closed
    assert server.errors == {"parser": 0, "handler": 1}


async def test_a_body_the_handler_does_not_take_is_never_read() -> None:
    events: list[str] = []
    _, connection, transport = connect(Handler(events, takes=0), Durability(events), events)
    receive(connection, post(b"a=1") + REQUEST)
    await next_pass()
    assert events == ["respond", "flush", "write"] and transport.answers() == [204] and transport.closed
