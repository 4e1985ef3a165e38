"""The redirect handler on a real socket: redirects, invalid links, client addresses, readiness, metrics."""

from __future__ import annotations

import asyncio
import ipaddress
import logging
import random
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any, cast

import aiohttp
import pytest

from clickedge.pgembed import free_port
from edge.redirect import SampledAccessLog
from edge.spool import Position
from links import keys
from links.token import MAX_TOKEN_CHARS
from tests.edge.helpers import URL, RunEdge, mint, spooled
from tests.edge.test_protocol import client_socket, read_answer


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
        before = edge.handler.metrics.outcome[outcome].value
        url = f"http://127.0.0.1:{edge.port}{make_path(mint(data_dir))}"
        async with http.get(url, allow_redirects=False) as resp:
            assert resp.status == status
            assert "Location" not in resp.headers
            assert resp.headers["Content-Type"].startswith("text/html")
            assert resp.headers["Cache-Control"] == "no-store"
            if outcome != "not_found":
                assert "not valid" in await resp.text()
        assert spooled(edge) == []
        assert edge.handler.metrics.outcome[outcome].value == before + 1


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
        edge.handler.draining = True
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


async def test_the_access_log_samples_the_fraction_asked_for(
    run_edge: RunEdge, data_dir: Path, caplog: pytest.LogCaptureFixture
) -> None:
    # A quarter of the requests, drawn from a seeded generator: exactly the requests whose draw falls under
    # the fraction are logged, in order (a second generator with the same seed says which).
    fraction, seed, count = 0.25, 13, 200
    draws = random.Random(seed)
    expected = [n for n in range(count) if draws.random() < fraction]
    assert 0 < len(expected) < count  # the seed samples some and skips some: a rate of 1.0 or 0 would fail
    caplog.set_level(logging.INFO, logger="clickedge.access")
    async with run_edge(access_log_sample=fraction) as edge:
        installed = edge.http.handler
        assert (
            isinstance(installed, SampledAccessLog) and installed._fraction == fraction
        )  # what the setting installs...
        edge.http.handler = SampledAccessLog(edge.handler, fraction, random.Random(seed))  # ...seeded
        reader, writer = await asyncio.open_connection("127.0.0.1", edge.port)
        token = mint(data_dir)
        for n in range(count):
            writer.write(f"GET /c/{token} HTTP/1.1\r\nHost: x\r\nUser-Agent: request-{n}\r\n\r\n".encode())
            assert (await read_answer(reader))[0] == 302
        writer.close()
        assert len(spooled(edge)) == count  # every click recorded, logged or not
    logged = [r.__dict__["user_agent"] for r in caplog.records if r.name == "clickedge.access"]
    assert logged == [f"request-{n}" for n in expected]


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


class RecordingTransport:
    """The edge's transport for one connection, noting in ``events`` when an answer is written to it."""

    def __init__(self, transport: asyncio.Transport, events: list[tuple[str, Position | None]]) -> None:
        self._transport = transport
        self._events = events

    def write(self, data: bytes) -> None:
        self._events.append(("answer written", None))
        self._transport.write(data)

    def writelines(self, lines: Iterable[bytes]) -> None:
        self._events.append(("answer written", None))
        self._transport.writelines(lines)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._transport, name)


async def test_fsync_always_answers_after_a_sync_that_covered_the_click(
    run_edge: RunEdge, data_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The order of events on the edge's event loop, recorded where they happen: the click written to the
    # spool (up to which position), each sync completed (covering up to which position), the 302 written to
    # the connection. The answer must come after a successful sync that covered its click.
    events: list[tuple[str, Position | None]] = []
    async with run_edge(fsync=None) as edge:
        spool = edge.spool
        flush, sync_targets, sync_done = spool.flush, spool.sync_targets, spool.sync_done
        covering: list[Position] = []

        def recording_flush() -> bool:
            before = spool.position
            kept = flush()
            if spool.position != before:
                events.append(("clicks written", spool.position))
            return kept

        def recording_targets() -> tuple[list[int], int]:
            targets = sync_targets()
            covering.append(spool.position)  # everything written before here is in the sync's descriptors
            return targets

        def recording_done(fds: list[int], ok: bool, records: int = 0) -> None:
            sync_done(fds, ok, records)
            events.append(("synced" if ok else "sync failed", covering.pop(0)))

        monkeypatch.setattr(spool, "flush", recording_flush)
        monkeypatch.setattr(spool, "sync_targets", recording_targets)
        monkeypatch.setattr(spool, "sync_done", recording_done)
        loop = asyncio.get_running_loop()
        async with client_socket(edge) as (sock, connection):
            assert connection._transport is not None
            connection._transport = cast(asyncio.Transport, RecordingTransport(connection._transport, events))
            await loop.sock_sendall(sock, f"GET /c/{mint(data_dir)} HTTP/1.1\r\nHost: x\r\n\r\n".encode())
            answer = b""
            async with asyncio.timeout(10):
                while b"\r\n\r\n" not in answer:
                    answer += await loop.sock_recv(sock, 4096)
        assert answer.startswith(b"HTTP/1.1 302 ")
    (click_end,) = [position for kind, position in events if kind == "clicks written" and position is not None]
    answered = events.index(("answer written", None))
    covered = [position for kind, position in events[:answered] if kind == "synced" and position is not None]
    assert covered and max(covered) >= click_end, events


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
