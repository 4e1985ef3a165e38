"""The HTTP layer (edge/protocol.py) on a real socket: pipelining, keep-alive and close, bodies, absolute
targets, half-closed and idle clients, clients that never read, and errors kept from the event loop."""

from __future__ import annotations

import asyncio
import logging
import socket
from pathlib import Path

import pytest

from edge.protocol import PIPELINE_ANSWERS, READ_SIZE, WRITE_HIGH, origin_form
from tests.conftest import eventually
from tests.edge.helpers import URL, RunEdge, mint, spooled


async def read_answer(reader: asyncio.StreamReader, *, head: bool = False) -> tuple[int, dict[str, str], bytes]:
    """One HTTP answer: status, headers (lower-case names), body."""
    lines = (await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 5)).decode().split("\r\n")
    headers = dict(line.split(": ", 1) for line in lines[1:] if line)
    headers = {name.lower(): value for name, value in headers.items()}
    length = 0 if head else int(headers.get("content-length", "0"))
    body = await asyncio.wait_for(reader.readexactly(length), 5)
    return int(lines[0].split(" ")[1]), headers, body


async def closed_by_server(reader: asyncio.StreamReader, timeout: float = 5) -> bool:
    return await asyncio.wait_for(reader.read(), timeout) == b""


async def test_pipelined_requests_are_answered_in_order(run_edge: RunEdge, data_dir: Path) -> None:
    async with run_edge() as edge:
        reader, writer = await asyncio.open_connection("127.0.0.1", edge.port)
        first, second = mint(data_dir, contact=1), mint(data_dir, contact=2)
        writer.write(
            f"GET /c/{first} HTTP/1.1\r\nHost: x\r\n\r\n"
            "GET /nothing HTTP/1.1\r\nHost: x\r\n\r\n"
            f"HEAD /c/{second} HTTP/1.1\r\nHost: x\r\n\r\n".encode()
        )
        status, headers, _ = await read_answer(reader)
        assert (status, headers["location"]) == (302, URL)
        assert "date" in headers and "connection" not in headers  # kept alive
        status, _, body = await read_answer(reader)
        assert status == 404 and b"nothing here" in body
        status, headers, _ = await read_answer(reader, head=True)
        assert (status, headers["location"]) == (302, URL)
        writer.close()
        assert [(row[4], row[9]) for row in spooled(edge)] == [(1, "GET"), (2, "HEAD")]


async def test_http_1_0_is_closed_unless_it_asks_for_keep_alive(run_edge: RunEdge, data_dir: Path) -> None:
    async with run_edge() as edge:
        reader, writer = await asyncio.open_connection("127.0.0.1", edge.port)
        writer.write(f"GET /c/{mint(data_dir)} HTTP/1.0\r\n\r\n".encode())
        status, headers, _ = await read_answer(reader)
        assert (status, headers["connection"]) == (302, "close")
        assert await closed_by_server(reader)
        writer.close()

        reader, writer = await asyncio.open_connection("127.0.0.1", edge.port)
        for _ in range(2):
            writer.write(f"GET /c/{mint(data_dir)} HTTP/1.0\r\nConnection: keep-alive\r\n\r\n".encode())
            status, headers, _ = await read_answer(reader)
            assert (status, headers["connection"]) == (302, "keep-alive")
        writer.close()
        assert len(spooled(edge)) == 3


async def test_a_request_with_a_body_is_answered_then_the_connection_closed(run_edge: RunEdge, data_dir: Path) -> None:
    async with run_edge() as edge:
        for method, status in (("POST", 405), ("GET", 302)):
            reader, writer = await asyncio.open_connection("127.0.0.1", edge.port)
            writer.write(
                f"{method} /c/{mint(data_dir)} HTTP/1.1\r\nHost: x\r\nContent-Length: 100000\r\n\r\n".encode()
                + b"x" * 1000
            )
            got, headers, _ = await read_answer(reader)
            assert (got, headers["connection"]) == (status, "close")
            assert await closed_by_server(reader)  # the rest of the body is never read
            writer.close()
        assert [row[9] for row in spooled(edge)] == ["GET"]


async def test_idle_and_trickling_connections_are_closed(run_edge: RunEdge, data_dir: Path) -> None:
    async with run_edge(keepalive_timeout=0.3) as edge:
        idle_reader, idle_writer = await asyncio.open_connection("127.0.0.1", edge.port)
        # A slow client sends a request a byte at a time and never finishes it within the timeout.
        slow_reader, slow_writer = await asyncio.open_connection("127.0.0.1", edge.port)
        request = f"GET /c/{mint(data_dir)} HTTP/1.1\r\nHost: x\r\n\r\n".encode()
        closed = asyncio.create_task(closed_by_server(slow_reader, timeout=10))
        for byte in request[:-1]:
            if closed.done():
                break
            slow_writer.write(bytes([byte]))
            await asyncio.sleep(0.02)  # the client's pace, not a synchronisation
        assert await closed
        assert await closed_by_server(idle_reader)
        idle_writer.close()
        slow_writer.close()
        assert spooled(edge) == []


async def test_while_draining_answers_close_the_connection(run_edge: RunEdge, data_dir: Path) -> None:
    async with run_edge() as edge:
        edge.handler.draining = True
        reader, writer = await asyncio.open_connection("127.0.0.1", edge.port)
        writer.write(f"GET /c/{mint(data_dir)} HTTP/1.1\r\nHost: x\r\n\r\n".encode())
        status, headers, _ = await read_answer(reader)
        assert (status, headers["connection"]) == (302, "close")
        assert await closed_by_server(reader)
        writer.close()


async def test_a_handler_bug_gets_the_500_page_and_the_edge_keeps_serving(
    run_edge: RunEdge, data_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    class Broken:
        def decode(self, token: str) -> None:
            raise RuntimeError("bug")

    async with run_edge() as edge:
        codec = edge.handler.codec
        monkeypatch.setattr(edge.handler, "codec", Broken())
        reader, writer = await asyncio.open_connection("127.0.0.1", edge.port)
        writer.write(f"GET /c/{mint(data_dir)} HTTP/1.1\r\nHost: x\r\n\r\n".encode())
        status, headers, body = await read_answer(reader)
        assert (status, headers["connection"]) == (500, "close") and b"went wrong" in body
        assert await closed_by_server(reader)
        writer.close()
        monkeypatch.setattr(edge.handler, "codec", codec)
        reader, writer = await asyncio.open_connection("127.0.0.1", edge.port)
        writer.write(f"GET /c/{mint(data_dir)} HTTP/1.1\r\nHost: x\r\n\r\n".encode())
        assert (await read_answer(reader))[0] == 302
        writer.close()


async def test_an_unparsable_request_after_pipelined_ones_comes_after_their_answers(run_edge: RunEdge) -> None:
    async with run_edge() as edge:
        reader, writer = await asyncio.open_connection("127.0.0.1", edge.port)
        count = 2000
        writer.write(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n" * count)
        statuses = [(await read_answer(reader))[0]]  # the server is answering them
        writer.write(b"GET /c/x HTTP/1.1\r\nBad Header\r\n\r\n")
        while statuses[-1] == 200:
            statuses.append((await read_answer(reader))[0])
        # Every pipelined request is answered, in order, then the 400; nothing comes after it.
        assert statuses == [200] * count + [400]
        assert await closed_by_server(reader)
        writer.close()


async def test_a_client_pipelining_deeply_gets_every_answer_in_order(run_edge: RunEdge, data_dir: Path) -> None:
    async with run_edge() as edge:
        reader, writer = await asyncio.open_connection("127.0.0.1", edge.port)
        requests = 40_000  # about 1.4 MB of requests, 20 MB of 404 pages: answered as the client reads them
        writer.write(
            b"GET /nothing HTTP/1.1\r\nHost: x\r\n\r\n" * requests
            + f"GET /c/{mint(data_dir)} HTTP/1.1\r\nHost: x\r\n\r\n".encode()
        )
        for i in range(requests):
            status, _, body = await read_answer(reader)
            assert status == 404, (i, body)
        assert (await read_answer(reader))[0] == 302
        writer.close()


@pytest.mark.parametrize(
    "body",
    [
        b"Content-Length: 10\r\n\r\n0123456789",
        b"Content-Length: 100000\r\n\r\n" + b"x" * 100_000,  # beyond the parser's payload limit
        b"Transfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n",
    ],
    ids=["short", "long", "chunked"],
)
async def test_a_request_whose_body_arrives_with_it_is_answered_and_recorded(
    run_edge: RunEdge, data_dir: Path, body: bytes, caplog: pytest.LogCaptureFixture
) -> None:
    async with run_edge() as edge:
        reader, writer = await asyncio.open_connection("127.0.0.1", edge.port)
        first, second = mint(data_dir, contact=1), mint(data_dir, contact=2)
        # One write: the request before it, then a GET whose whole body comes with its headers.
        writer.write(
            f"GET /c/{first} HTTP/1.1\r\nHost: x\r\n\r\nGET /c/{second} HTTP/1.1\r\nHost: x\r\n".encode() + body
        )
        status, headers, _ = await read_answer(reader)
        assert (status, headers["location"]) == (302, URL) and "connection" not in headers
        status, headers, _ = await read_answer(reader)
        assert (status, headers["location"], headers["connection"]) == (302, URL, "close")
        assert await closed_by_server(reader)
        writer.close()
        assert [row[4] for row in spooled(edge)] == [1, 2]
        assert edge.http.errors == {"parser": 0, "handler": 0}
    assert not [r for r in caplog.records if r.levelno >= logging.ERROR or r.name == "clickedge.edge.protocol"]


@pytest.mark.parametrize("origin", ["http://t.example.com", "HTTPS://t.example.com:8443", "http://t.example.com?"])
async def test_absolute_form_targets_are_routed_by_their_path(run_edge: RunEdge, data_dir: Path, origin: str) -> None:
    async with run_edge() as edge:
        reader, writer = await asyncio.open_connection("127.0.0.1", edge.port)
        target = f"{origin}/c/{mint(data_dir)}" if not origin.endswith("?") else f"{origin[:-1]}/c/{mint(data_dir)}?x=1"
        writer.write(
            f"GET {target} HTTP/1.1\r\nHost: t.example.com\r\n\r\n"
            f"GET {origin.rstrip('?')}/healthz HTTP/1.1\r\nHost: t.example.com\r\n\r\n"
            f"GET {origin.rstrip('?')} HTTP/1.1\r\nHost: t.example.com\r\n\r\n".encode()
        )
        status, headers, _ = await read_answer(reader)
        assert (status, headers["location"]) == (302, URL)
        assert (await read_answer(reader))[0] == 200
        assert (await read_answer(reader))[0] == 404  # the authority alone is "/": nothing there
        writer.close()
        assert len(spooled(edge)) == 1


def test_origin_form_of_request_targets() -> None:
    assert origin_form("http://h/c/x?q=1") == "/c/x?q=1"
    assert origin_form("https://h:443") == "/"
    assert origin_form("http://h?q") == "/?q"
    assert origin_form("http://user@h/c/x") == "/c/x"
    assert origin_form("*") == "*"
    assert origin_form("h:443") == "h:443"
    assert origin_form("ftp://h/c/x") == "ftp://h/c/x"


async def test_a_client_that_half_closes_gets_every_answer(run_edge: RunEdge, data_dir: Path) -> None:
    async with run_edge() as edge:
        reader, writer = await asyncio.open_connection("127.0.0.1", edge.port)
        count = 50  # more than one event-loop pass answers for a connection
        writer.write(f"GET /c/{mint(data_dir)} HTTP/1.1\r\nHost: x\r\n\r\n".encode() * count)
        writer.write_eof()  # as `printf ... | nc -N` does: all it will send, then it waits for the answers
        statuses = [(await read_answer(reader))[0] for _ in range(count)]
        assert statuses == [302] * count
        assert await closed_by_server(reader)
        writer.close()
        assert len(spooled(edge)) == count


async def test_a_client_that_never_reads_is_parked_with_bounded_memory(run_edge: RunEdge) -> None:
    async with run_edge() as edge:
        loop = asyncio.get_running_loop()
        with socket.socket() as sock:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
            sock.setblocking(False)
            await loop.sock_connect(sock, ("127.0.0.1", edge.port))

            async def accepted() -> bool:
                return len(edge.http.connections) == 1

            await eventually(accepted)
            (connection,) = edge.http.connections
            transport = connection._transport
            assert transport is not None
            # Small kernel buffers on both sides, so the answers back up into the edge at once rather than
            # after a megabyte has gone into the kernel (its memory, not the edge's).
            transport.get_extra_info("socket").setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 4096)
            await loop.sock_sendall(sock, b"GET /x HTTP/1.1\r\nHost: a\r\n\r\n" * 2400)  # 64 KiB, never read

            async def parked() -> bool:
                return connection._write_paused and not connection._reading

            await eventually(parked)
            # What the client has not taken, plus what it sent and the edge has not parsed: a few answers and
            # at most one read, not 64 KiB of requests' worth of 404 pages (about 1 MB).
            assert transport.get_write_buffer_size() <= WRITE_HIGH + PIPELINE_ANSWERS * 1024
            assert len(connection._stash) <= READ_SIZE
