"""The edge on a real socket: redirects, invalid links, client addresses, readiness, metrics."""

from __future__ import annotations

import asyncio
import ipaddress
import logging
import socket
import tempfile
from collections.abc import AsyncIterator, Callable
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from pathlib import Path
from typing import Any

import aiohttp
import orjson
import pytest

from clickedge.pgembed import free_port
from edge.config import EdgeConfig
from edge.main import RunningEdge, shutdown, start
from edge.protocol import PIPELINE_ANSWERS, READ_SIZE, WRITE_HIGH, origin_form
from links import keys
from links.token import MAX_TOKEN_CHARS
from tests.conftest import eventually

URL = "https://shop.example.com/pricing?utm_source=news&a=%2F#plans"
RunEdge = Callable[..., AbstractAsyncContextManager[RunningEdge]]


@pytest.fixture
def run_edge(data_dir: Path) -> RunEdge:
    @asynccontextmanager
    async def run(**overrides: Any) -> AsyncIterator[RunningEdge]:
        # No collector is listening on port 9: clicks stay spooled, where the tests can see them. Each
        # edge gets a spool of its own.
        spool_dir = Path(tempfile.mkdtemp(dir=data_dir, prefix="spool-"))
        fields = {
            "port": 0,
            "data_dir": data_dir,
            "collector_url": "http://127.0.0.1:9",
            "spool_dir": spool_dir,
            **overrides,
        }
        running = await start(EdgeConfig(**fields), reuse_port=False)
        try:
            yield running
        finally:
            await shutdown(running, grace=0, timeout=0)

    return run


@pytest.fixture
async def http() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession() as session:
        yield session


def spooled(running: RunningEdge) -> list[list[Any]]:
    """The clicks this edge has spooled (none are shipped: no collector listens on port 9)."""
    batch = running.spool.read(10_000)
    return [[event_id.hex(), *orjson.loads(payload)] for event_id, payload in batch.records]


def mint(data_dir: Path, url: str = URL, contact: int | None = 42) -> str:
    codec = keys.load(data_dir / "keys.json").codec()
    return codec.mint(url, campaign_id=7, link_id=3, contact_id=contact, sent_at=1_790_000_000)


async def test_redirect_answers_302_with_exact_location_and_records_the_click(
    run_edge: RunEdge, http: aiohttp.ClientSession, data_dir: Path
) -> None:
    async with run_edge() as edge:
        base = f"http://127.0.0.1:{edge.port}"
        token = mint(data_dir)
        headers = {"User-Agent": "Mozilla/5.0 (X11) Test"}
        async with http.get(f"{base}/c/{token}", allow_redirects=False, headers=headers) as resp:
            assert resp.status == 302
            assert resp.headers["Location"] == URL
            assert resp.headers["Cache-Control"] == "no-store"
        async with http.head(f"{base}/c/{token}", allow_redirects=False) as resp:
            assert resp.status == 302
            assert resp.headers["Location"] == URL
        rows = spooled(edge)
        assert [(r[2], r[3], r[4], r[5], r[7], r[9]) for r in rows] == [
            (7, 3, 42, 1_790_000_000, "127.0.0.1", "GET"),
            (7, 3, 42, 1_790_000_000, "127.0.0.1", "HEAD"),
        ]
        assert rows[0][8] == "Mozilla/5.0 (X11) Test"
        assert rows[0][0] != rows[1][0]  # each click its own event id


async def test_query_string_on_the_tracked_link_is_ignored(
    run_edge: RunEdge, http: aiohttp.ClientSession, data_dir: Path
) -> None:
    async with run_edge() as edge:
        url = f"http://127.0.0.1:{edge.port}/c/{mint(data_dir)}?fbclid=abc"
        async with http.get(url, allow_redirects=False) as resp:
            assert resp.status == 302
            assert resp.headers["Location"] == URL


def _flip(token: str) -> str:
    i = len(token) // 2
    return token[:i] + ("A" if token[i] != "A" else "B") + token[i + 1 :]


@pytest.mark.parametrize(
    ("make_path", "status", "outcome"),
    [
        (lambda t: f"/c/{_flip(t)}", 404, "invalid"),
        (lambda t: f"/c/{t[:-6]}", 404, "invalid"),
        (lambda t: f"/c/{t}AAAA", 404, "invalid"),
        (lambda t: "/c/" + "QUJD" * 30, 404, "invalid"),
        (lambda t: "/c/!!not-a-token!!", 400, "malformed"),
        (lambda t: "/c/", 400, "malformed"),
        (lambda t: "/c/" + "A" * (MAX_TOKEN_CHARS + 1), 414, "oversized"),
        (lambda t: "/c/" + "A" * 12000, 414, "oversized"),
        (lambda t: "/c/" + "A" * 100_000, 414, "oversized"),  # beyond the HTTP parser's line limit
        (lambda t: "/", 404, "not_found"),
        (lambda t: "/wp-admin", 404, "not_found"),
    ],
)
async def test_invalid_links_never_redirect(
    run_edge: RunEdge,
    http: aiohttp.ClientSession,
    data_dir: Path,
    make_path: Callable[[str], str],
    status: int,
    outcome: str,
) -> None:
    async with run_edge() as edge:
        before = edge.edge.metrics.outcome[outcome].value
        url = f"http://127.0.0.1:{edge.port}{make_path(mint(data_dir))}"
        async with http.get(url, allow_redirects=False) as resp:
            assert resp.status == status
            assert "Location" not in resp.headers
            assert resp.headers["Content-Type"].startswith("text/html")
            assert resp.headers["Cache-Control"] == "no-store"
            if outcome != "not_found":
                assert "not valid" in await resp.text()
        assert spooled(edge) == []
        assert edge.edge.metrics.outcome[outcome].value == before + 1


async def test_retired_key_link_is_not_valid(run_edge: RunEdge, http: aiohttp.ClientSession, data_dir: Path) -> None:
    path = data_dir / "keys.json"
    old = mint(data_dir)
    keys.save(keys.load(path).create(activate=True), path)
    new = mint(data_dir)
    keys.save(keys.load(path).retire(1), path)
    async with run_edge() as edge:
        base = f"http://127.0.0.1:{edge.port}/c/"
        async with http.get(base + old, allow_redirects=False) as resp:
            assert resp.status == 404
        async with http.get(base + new, allow_redirects=False) as resp:
            assert resp.status == 302
        assert len(spooled(edge)) == 1


async def test_other_methods_are_refused_and_not_recorded(
    run_edge: RunEdge, http: aiohttp.ClientSession, data_dir: Path
) -> None:
    async with run_edge() as edge:
        async with http.post(f"http://127.0.0.1:{edge.port}/c/{mint(data_dir)}", allow_redirects=False) as resp:
            assert resp.status == 405
            assert resp.headers["Allow"] == "GET, HEAD"
        assert spooled(edge) == []


async def test_forwarded_for_is_believed_only_from_trusted_proxies(
    run_edge: RunEdge, http: aiohttp.ClientSession, data_dir: Path
) -> None:
    headers = {"X-Forwarded-For": "198.51.100.23"}
    async with run_edge() as edge:
        async with http.get(
            f"http://127.0.0.1:{edge.port}/c/{mint(data_dir)}", headers=headers, allow_redirects=False
        ) as resp:
            assert resp.status == 302
        assert spooled(edge)[0][7] == "127.0.0.1"
    trusted = (ipaddress.ip_network("127.0.0.0/8"),)
    async with run_edge(trusted_proxies=trusted) as edge:
        async with http.get(
            f"http://127.0.0.1:{edge.port}/c/{mint(data_dir)}", headers=headers, allow_redirects=False
        ) as resp:
            assert resp.status == 302
        assert spooled(edge)[0][7] == "198.51.100.23"
        # A proxy that adds its own header line instead of extending the client's: the client's forged
        # first line must not win.
        two_lines = [("X-Forwarded-For", "6.6.6.6"), ("X-Forwarded-For", "203.0.113.9")]
        async with http.get(
            f"http://127.0.0.1:{edge.port}/c/{mint(data_dir)}", headers=two_lines, allow_redirects=False
        ) as resp:
            assert resp.status == 302
        assert spooled(edge)[1][7] == "203.0.113.9"


async def test_health_readiness_and_metrics(run_edge: RunEdge, http: aiohttp.ClientSession, data_dir: Path) -> None:
    async with run_edge(spool_max_bytes=200, spool_segment_bytes=200) as edge:
        base = f"http://127.0.0.1:{edge.port}"
        assert (await http.get(f"{base}/healthz")).status == 200
        assert (await http.get(f"{base}/readyz")).status == 200
        assert 'clickedge_edge_ready{worker="0"} 1.0' in await (await http.get(f"{base}/metrics")).text()
        for _ in range(3):
            async with http.get(f"{base}/c/{mint(data_dir)}", allow_redirects=False) as resp:
                assert resp.status == 302  # recipients land even when clicks cannot be kept
        # The spool is full (no collector takes the clicks): not ready, so a load balancer moves traffic
        # away, and the click that found no room is counted.
        assert (await http.get(f"{base}/readyz")).status == 503
        text = await (await http.get(f"{base}/metrics")).text()
        # Every series says which worker it is from.
        assert 'clickedge_edge_requests_total{outcome="redirect",worker="0"} 3.0' in text
        assert 'clickedge_edge_spool_records{worker="0"} 2.0' in text
        assert 'clickedge_edge_clicks_undurable_total{worker="0"} 1.0' in text
        assert 'clickedge_edge_spool_healthy{worker="0"} 0.0' in text
        assert 'clickedge_edge_ready{worker="0"} 0.0' in text  # what /readyz says
        assert 'clickedge_edge_spool_max_bytes{worker="0"} 200.0' in text
        assert 'service="edge",token_format="2"' in text  # clickedge_build_info
        assert 'process_resident_memory_bytes{worker="0"}' in text
        assert "clickedge_edge_handler_seconds_bucket" in text
        edge.edge.draining = True
        assert (await http.get(f"{base}/readyz")).status == 503


async def test_a_worker_serves_its_metrics_on_its_own_port(
    run_edge: RunEdge, http: aiohttp.ClientSession, data_dir: Path
) -> None:
    base_port = free_port()
    async with run_edge(metrics_port=base_port - 2, worker_index=2, workers=3) as edge:
        async with http.get(f"http://127.0.0.1:{edge.port}/c/{mint(data_dir)}", allow_redirects=False) as resp:
            assert resp.status == 302
        async with http.get(f"http://127.0.0.1:{base_port}/metrics") as resp:
            assert resp.status == 200
            assert 'clickedge_edge_requests_total{outcome="redirect",worker="2"} 1.0' in await resp.text()
        assert (await http.get(f"http://127.0.0.1:{base_port}/healthz")).status == 200
        async with http.get(f"http://127.0.0.1:{base_port}/c/{mint(data_dir)}", allow_redirects=False) as resp:
            assert resp.status == 404  # no redirects there: it is for Prometheus only
        async with http.get(f"http://127.0.0.1:{edge.port}/metrics") as resp:
            assert resp.status == 404  # and the redirect port, often public, no longer shows metrics


async def test_the_access_log_is_off_by_default_and_samples_when_asked(
    run_edge: RunEdge, http: aiohttp.ClientSession, data_dir: Path, caplog: pytest.LogCaptureFixture
) -> None:
    token = mint(data_dir)
    caplog.set_level(logging.INFO, logger="clickedge.access")
    async with run_edge() as edge:
        for _ in range(5):
            async with http.get(f"http://127.0.0.1:{edge.port}/c/{token}", allow_redirects=False) as resp:
                assert resp.status == 302
    assert not [r for r in caplog.records if r.name == "clickedge.access"]
    async with run_edge(access_log_sample=1.0) as edge:
        headers = {"User-Agent": "Mozilla/5.0 (sampled)"}
        async with http.get(f"http://127.0.0.1:{edge.port}/c/{token}", allow_redirects=False, headers=headers) as r:
            assert r.status == 302
        async with http.get(f"http://127.0.0.1:{edge.port}/c/{token}x", allow_redirects=False) as resp:
            assert resp.status == 400
    logged = [r.__dict__ for r in caplog.records if r.name == "clickedge.access"]
    assert [(r["method"], r["status"]) for r in logged] == [("GET", 302), ("GET", 400)]
    assert logged[0]["user_agent"] == "Mozilla/5.0 (sampled)" and logged[0]["peer"] == "127.0.0.1"
    # Enough of the token to find it again, never all of it (it stands for one recipient).
    assert token[:20] in logged[0]["path"] and token not in logged[0]["path"]


async def test_unparsable_request_gets_the_400_page_not_a_5xx(run_edge: RunEdge) -> None:
    async with run_edge() as edge:
        reader, writer = await asyncio.open_connection("127.0.0.1", edge.port)
        writer.write(b"GET /c/abc HTTP/1.1\r\nHost: x\r\nBad Header\r\n\r\n")
        await writer.drain()
        reply = await asyncio.wait_for(reader.read(), 5)
        writer.close()
        assert reply.split(b" ", 2)[1] == b"400", reply[:100]
        assert b"not valid" in reply
        assert spooled(edge) == []


async def test_fsync_always_answers_after_the_click_is_synced(
    run_edge: RunEdge, http: aiohttp.ClientSession, data_dir: Path
) -> None:
    def syncs(edge: RunningEdge) -> float:
        samples = next(iter(edge.edge.metrics.fsync_seconds.collect())).samples
        return next(s.value for s in samples if s.name.endswith("_count"))

    async with run_edge(fsync=None) as edge:
        before = syncs(edge)
        async with http.get(f"http://127.0.0.1:{edge.port}/c/{mint(data_dir)}", allow_redirects=False) as resp:
            assert resp.status == 302
        # The 302 was sent only after a sync that covered the click (there is no timer in this mode).
        assert not edge.spool.needs_sync
        assert syncs(edge) >= before + 1


# -- HTTP/1.1 on a raw socket: pipelining, keep-alive and close, bodies, idle clients ---------------------


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
        edge.edge.draining = True
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
        codec = edge.edge.codec
        monkeypatch.setattr(edge.edge, "codec", Broken())
        reader, writer = await asyncio.open_connection("127.0.0.1", edge.port)
        writer.write(f"GET /c/{mint(data_dir)} HTTP/1.1\r\nHost: x\r\n\r\n".encode())
        status, headers, body = await read_answer(reader)
        assert (status, headers["connection"]) == (500, "close") and b"went wrong" in body
        assert await closed_by_server(reader)
        writer.close()
        monkeypatch.setattr(edge.edge, "codec", codec)
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


async def test_a_forwarded_address_whose_zone_is_not_utf8_is_recorded_without_it(
    run_edge: RunEdge, data_dir: Path
) -> None:
    # Header bytes that are not UTF-8 used to reach the click record as surrogates, which it cannot hold: a
    # 500 and no click. A zone says which of the proxy's interfaces a packet came in on; it is dropped.
    async with run_edge(trusted_proxies=(ipaddress.ip_network("127.0.0.0/8"),)) as edge:
        reader, writer = await asyncio.open_connection("127.0.0.1", edge.port)
        request = (
            f"GET /c/{mint(data_dir)} HTTP/1.1\r\nHost: x\r\nX-Forwarded-For: ".encode() + b"fe80::1%\xff\xfe\r\n\r\n"
        )
        writer.write(request)
        status, headers, _ = await read_answer(reader)
        assert (status, headers["location"]) == (302, URL)
        writer.close()
        assert spooled(edge)[0][7] == "fe80::1"
        assert edge.http.errors == {"parser": 0, "handler": 0}
