"""One-click unsubscribe (RFC 8058) at ``/u/<token>`` on a real socket: the confirmation page that records
nothing, the POST that is spooled like a click, the bodies refused, and tokens that work for one purpose
only."""

from __future__ import annotations

import asyncio
import base64
import hashlib
import ipaddress
import logging
import re
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from multidict import CIMultiDict, CIMultiDictProxy

from clickedge.pgembed import free_port
from edge.blocklist import Blocklist
from edge.main import RunningEdge
from edge.one_click import MAX_BODY
from links.token import MAX_TOKEN_CHARS
from tests.conftest import eventually
from tests.edge.helpers import RunEdge, mint, mint_unsubscribe, spooled
from tests.edge.test_protocol import client_socket, closed_by_server, read_answer

ONE_CLICK = b"List-Unsubscribe=One-Click"
URLENCODED = "application/x-www-form-urlencoded"
BOUNDARY = "----mail-provider-7f3a"
MULTIPART_BODY = (
    f'--{BOUNDARY}\r\nContent-Disposition: form-data; name="List-Unsubscribe"\r\n\r\nOne-Click\r\n--{BOUNDARY}--\r\n'
).encode()
NOT_ONE_CLICK = b"This request must carry List-Unsubscribe=One-Click."


def post(path: str, body: bytes, content_type: str = URLENCODED, headers: str = "") -> bytes:
    return (
        f"POST {path} HTTP/1.1\r\nHost: x\r\nContent-Type: {content_type}\r\nContent-Length: {len(body)}\r\n"
        f"{headers}\r\n"
    ).encode() + body


async def exchange(edge: RunningEdge, request: bytes) -> tuple[int, dict[str, str], bytes]:
    """Send ``request`` on a new connection: its answer, once the edge has closed the connection."""
    reader, writer = await asyncio.open_connection("127.0.0.1", edge.port)
    writer.write(request)
    answer = await read_answer(reader, head=request.startswith(b"HEAD "))
    assert await closed_by_server(reader)
    writer.close()
    return answer


def outcomes(edge: RunningEdge) -> dict[str, int]:
    return {name: counter.value for name, counter in edge.handler.metrics.outcome.items() if counter.value}


def unsubscribes(edge: RunningEdge) -> list[tuple[Any, ...]]:
    """The spooled rows as (campaign, link, contact, sent_at, client ip, method, outcome)."""
    return [(r[2], r[3], r[4], r[5], r[7], r[9], r[11] if len(r) > 11 else None) for r in spooled(edge)]


UNSUBSCRIBED = (7, 0, 42, 1_790_000_000, "127.0.0.1", "POST", "unsubscribe")


def assert_unsubscribe_headers(headers: dict[str, str]) -> None:
    assert headers["cache-control"] == "no-store" and headers["referrer-policy"] == "no-referrer"
    policy = [directive.strip() for directive in headers["content-security-policy"].split(";")]
    assert {"default-src 'none'", "form-action 'self'", "frame-ancestors 'none'"} <= set(policy)
    assert not [d for d in policy if "script" in d or "unsafe" in d], policy
    assert headers["content-type"] == "text/html; charset=utf-8"


async def test_the_confirmation_page_offers_the_one_click_form_and_records_nothing(
    run_edge: RunEdge, data_dir: Path
) -> None:
    async with run_edge() as edge:
        path = f"/u/{mint_unsubscribe(data_dir)}"
        reader, writer = await asyncio.open_connection("127.0.0.1", edge.port)
        for target in (path, path + "?utm_source=mail"):
            writer.write(f"GET {target} HTTP/1.1\r\nHost: x\r\n\r\n".encode())
            status, headers, body = await read_answer(reader)
            assert status == 200 and "connection" not in headers  # kept alive: a GET has no body
            assert_unsubscribe_headers(headers)
            assert b'<form method="post">' in body and b"action=" not in body  # posts to this very URL
            assert b'<input type="hidden" name="List-Unsubscribe" value="One-Click">' in body
            assert b'<button type="submit">Unsubscribe</button>' in body
            assert b"<script" not in body
            # The one style element is the one the policy allows, by its hash.
            (style,) = re.findall(rb"<style>(.*?)</style>", body)
            digest = base64.b64encode(hashlib.sha256(style).digest()).decode()
            assert f"style-src 'sha256-{digest}'" in headers["content-security-policy"]
            assert b"style=" not in body  # and no style attribute, which it would not allow
        writer.write(f"HEAD {path} HTTP/1.1\r\nHost: x\r\n\r\n".encode())
        status, headers, _ = await read_answer(reader, head=True)
        assert status == 200 and int(headers["content-length"]) > 0
        writer.write(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
        assert (await read_answer(reader))[0] == 200  # and nothing was left unread in between
        writer.close()
        assert spooled(edge) == []
        assert outcomes(edge) == {"unsubscribe_page": 3}


@pytest.mark.parametrize(
    ("body", "content_type"),
    [
        (ONE_CLICK, URLENCODED),
        (b"utm=1&" + ONE_CLICK, URLENCODED),
        (MULTIPART_BODY, f"multipart/form-data; boundary={BOUNDARY}"),
    ],
    ids=["urlencoded", "urlencoded-among-others", "multipart"],
)
async def test_a_one_click_post_records_one_unsubscribe(
    run_edge: RunEdge, data_dir: Path, body: bytes, content_type: str
) -> None:
    async with run_edge() as edge:
        request = post(f"/u/{mint_unsubscribe(data_dir)}?x=1", body, content_type, "User-Agent: Mail-Provider/1\r\n")
        status, headers, page = await exchange(edge, request)
        assert (status, headers["connection"]) == (200, "close") and b"You are unsubscribed" in page
        assert_unsubscribe_headers(headers)
        assert unsubscribes(edge) == [UNSUBSCRIBED]
        assert spooled(edge)[0][8] == "Mail-Provider/1"
        assert outcomes(edge) == {"unsubscribe": 1}


async def test_an_unsubscribe_records_the_client_address_as_a_click_does(run_edge: RunEdge, data_dir: Path) -> None:
    async with run_edge(trusted_proxies=(ipaddress.ip_network("127.0.0.0/8"),)) as edge:
        forwarded = "X-Forwarded-For: 6.6.6.6\r\nX-Forwarded-For: 198.51.100.23\r\n"
        assert (await exchange(edge, post(f"/u/{mint_unsubscribe(data_dir)}", ONE_CLICK, headers=forwarded)))[0] == 200
        assert [row[4] for row in unsubscribes(edge)] == ["198.51.100.23"]


@pytest.mark.parametrize(
    "request_for",
    [
        lambda path: post(path, b""),
        lambda path: f"POST {path} HTTP/1.1\r\nHost: x\r\n\r\n".encode(),  # no body at all
        lambda path: post(path, b"List-Unsubscribe=Yes"),
        lambda path: post(path, b"List-Unsubscribe=One-Click", "multipart/form-data; boundary=b"),
        lambda path: post(path, MULTIPART_BODY, f"multipart/form-data; boundary={BOUNDARY}x"),
    ],
    ids=["empty", "no-body", "other-value", "urlencoded-sent-as-multipart", "multipart-wrong-boundary"],
)
async def test_a_post_without_one_click_is_refused_and_records_nothing(
    run_edge: RunEdge, data_dir: Path, request_for: Callable[[str], bytes]
) -> None:
    async with run_edge() as edge:
        reader, writer = await asyncio.open_connection("127.0.0.1", edge.port)
        writer.write(request_for(f"/u/{mint_unsubscribe(data_dir)}"))
        status, headers, page = await read_answer(reader)
        writer.close()
        assert status == 400 and NOT_ONE_CLICK in page
        assert_unsubscribe_headers(headers)
        assert spooled(edge) == []
        assert outcomes(edge) == {"unsubscribe_refused": 1}


async def test_a_body_over_4_kib_is_refused_with_413_and_one_at_the_limit_is_taken(
    run_edge: RunEdge, data_dir: Path
) -> None:
    async with run_edge() as edge:
        path = f"/u/{mint_unsubscribe(data_dir)}"
        at_limit = ONE_CLICK + b"&pad=" + b"x" * (MAX_BODY - len(ONE_CLICK) - 5)
        assert len(at_limit) == MAX_BODY
        status, _, page = await exchange(edge, post(path, at_limit + b"x"))
        assert status == 413 and b"too large" in page
        # Declared too large, and only the head sent: answered at once, not waited for.
        reader, writer = await asyncio.open_connection("127.0.0.1", edge.port)
        writer.write(f"POST {path} HTTP/1.1\r\nHost: x\r\nContent-Length: {MAX_BODY + 1}\r\n\r\n".encode())
        assert (await read_answer(reader))[0] == 413
        assert await closed_by_server(reader)
        writer.close()
        # Chunked, with no length said: refused once what has come is over the limit.
        reader, writer = await asyncio.open_connection("127.0.0.1", edge.port)
        writer.write(f"POST {path} HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n".encode())
        writer.write(f"{MAX_BODY:x}\r\n".encode() + ONE_CLICK + b"&" + b"x" * (MAX_BODY - len(ONE_CLICK) - 1) + b"\r\n")
        writer.write(b"1\r\nx\r\n")
        assert (await read_answer(reader))[0] == 413
        assert await closed_by_server(reader)
        writer.close()
        assert spooled(edge) == []
        assert (await exchange(edge, post(path, at_limit)))[0] == 200
        assert unsubscribes(edge) == [UNSUBSCRIBED]
        assert outcomes(edge) == {"unsubscribe_refused": 3, "unsubscribe": 1}


@pytest.mark.parametrize("chunked", [False, True], ids=["content-length", "chunked"])
async def test_a_body_that_arrives_in_several_writes_is_read_to_its_end(
    run_edge: RunEdge, data_dir: Path, chunked: bool
) -> None:
    loop = asyncio.get_running_loop()
    path = f"/u/{mint_unsubscribe(data_dir)}"
    if chunked:
        head = f"POST {path} HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n".encode()
        pieces = [b"5\r\nList-", b"\r\n15\r\nUnsubscribe=One-", b"Click\r\n", b"0\r\n\r\n"]
        taken = [5, 5, len(ONE_CLICK), len(ONE_CLICK)]
    else:
        head = f"POST {path} HTTP/1.1\r\nHost: x\r\nContent-Length: {len(ONE_CLICK)}\r\n\r\n".encode()
        pieces = [ONE_CLICK[:5], ONE_CLICK[5:17], ONE_CLICK[17:]]
        taken = [5, 17, len(ONE_CLICK)]
    async with run_edge() as edge, client_socket(edge) as (sock, connection):
        await loop.sock_sendall(sock, head)

        async def reading_a_body() -> bool:
            return connection._body is not None

        await eventually(reading_a_body)
        for piece, total in zip(pieces[:-1], taken, strict=False):
            await loop.sock_sendall(sock, piece)

            async def arrived(total: int = total) -> bool:
                body = connection._body
                return body is not None and body.payload.total_bytes == total and not body.payload.is_eof()

            await eventually(arrived)  # read, and no answer yet: the edge waits for the rest
        assert spooled(edge) == []
        await loop.sock_sendall(sock, pieces[-1])
        received = b""
        async with asyncio.timeout(10):
            while chunk := await loop.sock_recv(sock, 4096):
                received += chunk
        assert received.startswith(b"HTTP/1.1 200 ") and b"You are unsubscribed" in received
        assert unsubscribes(edge) == [UNSUBSCRIBED]


async def test_requests_pipelined_after_a_post_are_not_read_and_those_before_it_are_answered(
    run_edge: RunEdge, data_dir: Path
) -> None:
    async with run_edge() as edge:
        reader, writer = await asyncio.open_connection("127.0.0.1", edge.port)
        before, after = mint(data_dir, contact=1), mint(data_dir, contact=2)
        writer.write(
            f"GET /c/{before} HTTP/1.1\r\nHost: x\r\n\r\n".encode()
            + post(f"/u/{mint_unsubscribe(data_dir)}", ONE_CLICK)
            + f"GET /c/{after} HTTP/1.1\r\nHost: x\r\n\r\nGET /healthz HTTP/1.1\r\nHost: x\r\n\r\n".encode()
        )
        assert (await read_answer(reader))[0] == 302
        status, headers, _ = await read_answer(reader)
        assert (status, headers["connection"]) == (200, "close")
        assert await closed_by_server(reader)  # nothing after the POST's answer
        writer.close()
        assert [(row[2], row[6]) for row in unsubscribes(edge)] == [(1, None), (42, "unsubscribe")]
        assert edge.http.errors == {"parser": 0, "handler": 0}


async def test_a_body_that_never_ends_is_closed_by_the_keepalive_timeout(run_edge: RunEdge, data_dir: Path) -> None:
    keepalive = 0.3
    async with run_edge(keepalive_timeout=keepalive) as edge, client_socket(edge) as (sock, connection):
        loop = asyncio.get_running_loop()
        started = loop.time()
        await loop.sock_sendall(sock, post(f"/u/{mint_unsubscribe(data_dir)}", ONE_CLICK)[:-1])

        async def reading_a_body() -> bool:
            return connection._body is not None and connection._body.payload.total_bytes == len(ONE_CLICK) - 1

        await eventually(reading_a_body)
        async with asyncio.timeout(keepalive + 10):
            assert await loop.sock_recv(sock, 4096) == b""  # closed, with no answer
        assert loop.time() - started >= keepalive
        assert connection not in edge.http.connections
        assert spooled(edge) == []


def _flip(token: str) -> str:
    i = len(token) // 2
    return token[:i] + ("A" if token[i] != "A" else "B") + token[i + 1 :]


@pytest.mark.parametrize("method", ["GET", "POST"])
@pytest.mark.parametrize(
    ("make_path", "status", "outcome"),
    [
        (lambda d: f"/u/{mint(d)}", 404, "invalid"),  # a link's token is not an unsubscribe token
        (lambda d: f"/u/{_flip(mint_unsubscribe(d))}", 404, "invalid"),
        (lambda d: f"/u/{mint_unsubscribe(d)[:-4]}", 400, "malformed"),
        (lambda d: "/u/!!not-a-token!!", 400, "malformed"),
        (lambda d: "/u/", 400, "malformed"),
        (lambda d: "/u/" + "A" * (MAX_TOKEN_CHARS + 1), 414, "oversized"),
        (lambda d: f"/c/{mint_unsubscribe(d)}", 400, "malformed"),  # nor the other way round: too short
    ],
    ids=["link-token", "forged", "truncated", "garbage", "empty", "oversized", "unsubscribe-token-at-c"],
)
async def test_tokens_that_are_not_unsubscribe_tokens_get_the_error_pages_and_record_nothing(
    run_edge: RunEdge, data_dir: Path, make_path: Callable[[Path], str], status: int, outcome: str, method: str
) -> None:
    path = make_path(data_dir)
    async with run_edge() as edge:
        reader, writer = await asyncio.open_connection("127.0.0.1", edge.port)
        writer.write(post(path, ONE_CLICK) if method == "POST" else f"GET {path} HTTP/1.1\r\nHost: x\r\n\r\n".encode())
        got, headers, page = await read_answer(reader)
        writer.close()
        if path.startswith("/c/") and method == "POST":
            assert (got, headers["allow"]) == (405, "GET, HEAD")  # at /c/ a POST stays refused as it was
            outcome = "method_not_allowed"
        else:
            assert got == status and b"not valid" in page and "location" not in headers
        assert spooled(edge) == []
        assert outcomes(edge) == {outcome: 1}


@pytest.mark.parametrize("body", [b"", ONE_CLICK], ids=["no-body", "body"])
async def test_other_methods_are_refused_at_u(run_edge: RunEdge, data_dir: Path, body: bytes) -> None:
    async with run_edge() as edge:
        path = f"/u/{mint_unsubscribe(data_dir)}"
        reader, writer = await asyncio.open_connection("127.0.0.1", edge.port)
        length = f"Content-Length: {len(body)}\r\n" if body else ""
        writer.write(f"PUT {path} HTTP/1.1\r\nHost: x\r\n{length}\r\n".encode() + body)
        status, headers, _ = await read_answer(reader)
        writer.close()
        assert (status, headers["allow"]) == (405, "GET, HEAD, POST")
        assert spooled(edge) == []
        assert outcomes(edge) == {"method_not_allowed": 1}


async def test_a_blocked_campaigns_recipients_can_still_unsubscribe(run_edge: RunEdge, data_dir: Path) -> None:
    async with run_edge() as edge:
        edge.handler.blocklist = Blocklist(frozenset({7}), frozenset(), frozenset(), '"v1"')
        reader, writer = await asyncio.open_connection("127.0.0.1", edge.port)
        writer.write(f"GET /c/{mint(data_dir)} HTTP/1.1\r\nHost: x\r\n\r\n".encode())
        assert (await read_answer(reader))[0] == 410
        writer.write(post(f"/u/{mint_unsubscribe(data_dir)}", ONE_CLICK))
        assert (await read_answer(reader))[0] == 200
        writer.close()
        assert [row[6] for row in unsubscribes(edge)] == ["blocked", "unsubscribe"]


async def test_an_unsubscribe_the_spool_cannot_take_is_a_503_not_a_confirmation(
    run_edge: RunEdge, data_dir: Path
) -> None:
    async with run_edge(spool_max_bytes=200, spool_segment_bytes=200) as edge:
        path = f"/u/{mint_unsubscribe(data_dir)}"
        assert (await exchange(edge, post(path, ONE_CLICK)))[0] == 200
        assert (await exchange(edge, post(path, ONE_CLICK)))[0] == 200
        status, headers, page = await exchange(edge, post(path, ONE_CLICK))  # the spool is full
        assert (status, headers["retry-after"]) == (503, "60") and b"try again" in page
        assert_unsubscribe_headers(headers)
        assert len(spooled(edge)) == 2
        assert outcomes(edge) == {"unsubscribe": 2, "unsubscribe_refused": 1}


@pytest.mark.parametrize("fsync", [None, 0.2], ids=["always", "interval"])
async def test_an_unsubscribe_waits_for_durability_as_a_click_does(
    run_edge: RunEdge, data_dir: Path, fsync: float | None
) -> None:
    async with run_edge(fsync=fsync) as edge:
        handler, headers = edge.handler, CIMultiDictProxy(CIMultiDict({"Content-Type": URLENCODED}))
        path = f"/u/{mint_unsubscribe(data_dir)}"
        _, _, wait = handler.respond_with_body("POST", path, headers, "127.0.0.1", ONE_CLICK)
        _, _, click_wait = handler.respond("GET", f"/c/{mint(data_dir)}", headers, "127.0.0.1")
        assert wait is click_wait is (fsync is None)


async def test_the_access_log_samples_unsubscribes(
    run_edge: RunEdge, data_dir: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="clickedge.access")
    async with run_edge(access_log_sample=1.0) as edge:
        path = f"/u/{mint_unsubscribe(data_dir)}"
        assert (await exchange(edge, post(path, ONE_CLICK)))[0] == 200
        assert unsubscribes(edge) == [UNSUBSCRIBED]
    logged = [r.__dict__ for r in caplog.records if r.name == "clickedge.access"]
    assert [(r["method"], r["status"]) for r in logged] == [("POST", 200)]
    assert path not in logged[0]["path"] and logged[0]["path"] == path[: len(logged[0]["path"])]


async def test_the_metrics_port_reads_no_body(run_edge: RunEdge, data_dir: Path) -> None:
    base_port = free_port()
    async with run_edge(metrics_port=base_port) as edge:
        path = f"/u/{mint_unsubscribe(data_dir)}"
        reader, writer = await asyncio.open_connection("127.0.0.1", base_port)
        writer.write(post(path, ONE_CLICK))
        status, headers, _ = await read_answer(reader)
        assert (status, headers["connection"]) == (404, "close")
        assert await closed_by_server(reader)
        writer.close()
        assert edge.metrics_http is not None
        metrics_handler = edge.metrics_http.handler
        headers_in = CIMultiDictProxy(CIMultiDict[str]())
        assert metrics_handler.respond_with_body("POST", path, headers_in, "", ONE_CLICK)[0].startswith(b"HTTP/1.1 404")
        assert spooled(edge) == []


async def test_unsubscribes_and_clicks_fill_a_batch_together(
    run_edge: RunEdge, data_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    async with run_edge(batch_size=3) as edge:
        woken: list[int] = []
        monkeypatch.setattr(edge.handler, "_on_batch_ready", lambda: woken.append(1))
        reader, writer = await asyncio.open_connection("127.0.0.1", edge.port)
        writer.write(f"GET /c/{mint(data_dir)} HTTP/1.1\r\nHost: x\r\n\r\n".encode() * 2)
        assert [(await read_answer(reader))[0] for _ in range(2)] == [302, 302]
        writer.close()
        assert woken == []
        assert (await exchange(edge, post(f"/u/{mint_unsubscribe(data_dir)}", ONE_CLICK)))[0] == 200
        assert woken == [1]  # the third record of the batch wakes the shipper
