"""The shipper against real servers on real sockets: the collector itself, and servers standing in for what
else may answer at CLICKEDGE_COLLECTOR_URL (a wrong URL, a proxy with a body limit).

What each answer class must do: 404/405 and a 400 that is not the collector's are a configuration error
(retried, counted, nothing set aside); 401/403 are wrong credentials (retried, logged at error level, nothing
set aside); 408/425/429 are retried like a 5xx; 413 makes batches smaller; only the collector's own refusal
is dead-lettered, the dead-letter file stays within its share of the spool's cap, and a dead-letter file
that cannot be written keeps the batch in the spool. A 200 is a 200 whatever its body says. A failed write
of the acknowledged position is logged, and costs only duplicates after a restart. The shipper's loop never
spins, survives its own bugs, and reads the spool off the event loop.
"""

from __future__ import annotations

import asyncio
import logging
import os
import sys
import threading
from collections.abc import AsyncIterator, Callable, Iterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import aiohttp
import asyncpg
import orjson
import pytest
from aiohttp import web
from aiohttp.test_utils import TestServer

from collector.app import create_app
from collector.config import CollectorConfig
from common import frames
from common.events import EDGE_HEADER, SPOOL_CONTENT_TYPE, EventIds, click_payload
from edge.metrics import EdgeMetrics
from edge.shipper import MOVED, NOTHING_YET, Shipper
from edge.spool import HEADER, MAGIC, Frames, Spool, SpoolView, _name
from tests.collector.clock import RECENT_US
from tests.conftest import INGEST_SECRET, eventually

NOW_US = RECENT_US  # the collector takes only clicks near its clock


def click(campaign_id: int, n: int, method: str = "GET", user_agent: str = "test") -> bytes:
    return click_payload(NOW_US + n, campaign_id, 1, n + 1, 0, 1, "192.0.2.1", user_agent, method, 0)


def spool_of(path: Path, clicks: list[bytes], **kw: Any) -> Spool:
    spool = Spool(path, **kw)
    spool.open()
    ids = EventIds()
    for payload in clicks:
        assert spool.append(ids.next_bytes(NOW_US // 1000), payload)
    return spool


def new_shipper(spool: Spool, url: str, tmp_path: Path, **kw: Any) -> Shipper:
    return Shipper(
        spool,
        EdgeMetrics(),
        collector_url=url,
        secret=kw.pop("secret", INGEST_SECRET),
        edge_name="test-edge",
        batch_size=kw.pop("batch_size", 100),
        linger=kw.pop("linger", 0.01),
        dead_letter=tmp_path / "dead-letter.jsonl",
        **kw,
    )


def append_raw(spool: Spool, data: bytes) -> None:
    """Bytes at the end of the active segment that are not a whole record, as the spool would count them."""
    fd = os.open(spool.directory / _name(spool.position.segment), os.O_WRONLY | os.O_APPEND)
    try:
        os.write(fd, data)
    finally:
        os.close(fd)
    spool._sizes[spool.position.segment] += len(data)
    spool._size += len(data)
    spool._bytes += len(data)


@asynccontextmanager
async def serving(app: web.Application) -> AsyncIterator[TestServer]:
    server = TestServer(app)
    await server.start_server()
    try:
        yield server
    finally:
        await server.close()


@asynccontextmanager
async def running(shipper: Shipper) -> AsyncIterator[asyncio.Task[None]]:
    task = asyncio.create_task(shipper.run())
    try:
        yield task
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
        await shipper.close()


def answering(status: int, seen: list[int]) -> web.Application:
    """A server that is not the collector: whatever is posted, ``status`` (a wrong URL, a proxy)."""

    async def handle(request: web.Request) -> web.Response:
        await request.read()
        seen.append(status)
        return web.Response(status=status, text="not here\n")

    app = web.Application()
    app.router.add_route("*", "/{tail:.*}", handle)
    return app


def gate(upstream: str, refusals: list[int], seen: list[int]) -> web.Application:
    """A server in front of the collector that answers the first posts with ``refusals``, one each, then passes
    every post on to ``upstream`` (the real collector) as it is, answering what the collector answered."""

    async def handle(request: web.Request) -> web.Response:
        body = await request.read()
        if refusals:
            status = refusals.pop(0)
            seen.append(status)
            return web.Response(status=status, text=f"refused with {status}\n")
        async with (
            aiohttp.ClientSession() as http,
            http.post(upstream, data=body, headers=forwarded(request)) as resp,
        ):
            seen.append(resp.status)
            return web.Response(status=resp.status, body=await resp.read(), headers=resp.headers)

    app = web.Application()
    app.router.add_post("/v1/clicks", handle)
    return app


def value(counter: Any) -> float:
    return float(counter._value.get())


def collector_app(database_url: str, hold: float = 0.0) -> web.Application:
    config = CollectorConfig(verdict_hold=hold, database_url=database_url, ingest_secret=INGEST_SECRET)
    return create_app(config)


async def rows(db: asyncpg.Connection, campaign_id: int) -> int:
    """The campaign's clicks stored: settled, or waiting for their verdicts."""
    return int(
        await db.fetchval(
            """SELECT count(*) FROM (SELECT event_id FROM clicks WHERE campaign_id = $1
                                     UNION SELECT event_id FROM pending_clicks WHERE campaign_id = $1) stored""",
            campaign_id,
        )
    )


def forwarded(request: web.Request) -> dict[str, str]:
    """What a proxy in front of the collector passes on: the credentials and what says how to read the body."""
    return {name: request.headers[name] for name in ("Authorization", "Content-Type", EDGE_HEADER)}


@pytest.mark.parametrize(("status", "label"), [(404, "404"), (405, "405"), (400, "400 from a proxy")])
async def test_an_answer_the_collector_never_gives_is_retried_and_nothing_is_dead_lettered(
    tmp_path: Path, campaign_id: int, status: int, label: str
) -> None:
    spool = spool_of(tmp_path / "spool", [click(campaign_id, n) for n in range(5)])
    seen: list[int] = []
    try:
        async with serving(answering(status, seen)) as server:
            shipper = new_shipper(spool, str(server.make_url("")).rstrip("/"), tmp_path)
            async with running(shipper):

                async def retried() -> bool:
                    return len(seen) >= 3

                await eventually(retried)
            misdirected = shipper._metrics.batch_misdirected._value.get()
            assert misdirected >= 3, label
            assert shipper._metrics.batch_dead_lettered._value.get() == 0
            assert not (tmp_path / "dead-letter.jsonl").exists()
            assert spool.unacknowledged_records == 5  # every click still in the spool, waiting
    finally:
        spool.close()


async def test_wrong_credentials_are_retried_loudly_and_nothing_is_set_aside(
    tmp_path: Path, database_url: str, db: asyncpg.Connection, campaign_id: int, caplog: pytest.LogCaptureFixture
) -> None:
    # The collector itself refuses a wrong ingest secret with 401. Nothing can move until an operator fixes the
    # secret: the batch is retried, each refusal said at error level, and nothing is dead-lettered.
    spool = spool_of(tmp_path / "spool", [click(campaign_id, n) for n in range(5)])
    try:
        async with serving(collector_app(database_url)) as collector:
            url = str(collector.make_url("")).rstrip("/")
            wrong = new_shipper(spool, url, tmp_path, secret="not-the-ingest-secret")
            async with running(wrong):

                async def retried() -> bool:
                    return value(wrong._metrics.ship_retries) >= 3

                await eventually(retried)
            refusals = [r for r in caplog.records if "refused our credentials (401)" in r.getMessage()]
            assert len(refusals) >= 3 and {r.levelno for r in refusals} == {logging.ERROR}
            assert "not-the-ingest-secret" not in caplog.text  # the secret itself is never logged
            assert value(wrong._metrics.batch_failed) >= 3
            assert value(wrong._metrics.batch_dead_lettered) == value(wrong._metrics.batch_misdirected) == 0
            assert not (tmp_path / "dead-letter.jsonl").exists()
            assert spool.unacknowledged_records == 5 and await rows(db, campaign_id) == 0

            # The operator fixes the secret (the edge restarts with it): every click is delivered.
            fixed = new_shipper(spool, url, tmp_path)
            async with running(fixed):

                async def shipped() -> bool:
                    return spool.empty

                await eventually(shipped)
        assert await rows(db, campaign_id) == 5
    finally:
        spool.close()


@pytest.mark.parametrize("status", [403, 408, 425, 429])
async def test_a_retryable_refusal_is_retried_until_the_collector_takes_the_batch(
    tmp_path: Path,
    database_url: str,
    db: asyncpg.Connection,
    campaign_id: int,
    caplog: pytest.LogCaptureFixture,
    status: int,
) -> None:
    # Something in front of the collector (an authenticating proxy: 403; a busy or slow one: 408, 425, 429)
    # refuses the batch three times, then lets it through to the real collector.
    spool = spool_of(tmp_path / "spool", [click(campaign_id, n) for n in range(5)])
    seen: list[int] = []
    try:
        async with (
            serving(collector_app(database_url)) as collector,
            serving(gate(str(collector.make_url("/v1/clicks")), [status] * 3, seen)) as server,
        ):
            shipper = new_shipper(spool, str(server.make_url("")).rstrip("/"), tmp_path)
            async with running(shipper):

                async def shipped() -> bool:
                    return spool.empty

                await eventually(shipped)
        assert seen == [status] * 3 + [200]  # the same batch, retried until it went through once
        assert await rows(db, campaign_id) == 5
        metrics = shipper._metrics
        assert value(metrics.ship_retries) == value(metrics.batch_failed) == 3
        assert value(metrics.batch_misdirected) == value(metrics.batch_dead_lettered) == 0
        assert value(metrics.clicks_shipped) == 5
        assert not (tmp_path / "dead-letter.jsonl").exists()
        said = [r for r in caplog.records if f"({status})" in r.getMessage() or f"answered {status}" in r.getMessage()]
        assert len(said) == 3
        # A 403 says the credentials are wrong (an error); a 408, 425 or 429 is a collector too busy (a warning).
        assert {r.levelno for r in said} == {logging.ERROR if status == 403 else logging.WARNING}
    finally:
        spool.close()


async def test_a_dead_letter_file_that_cannot_be_written_keeps_the_batch_in_the_spool(
    tmp_path: Path, database_url: str, campaign_id: int, caplog: pytest.LogCaptureFixture
) -> None:
    # The collector refuses the batch for good (a method it never takes), and writing the dead-letter file
    # fails: the disk is full. /dev/full is a real device whose every write fails with ENOSPC, reached here
    # through a symbolic link at the dead-letter path. (A read-only file would not do: tests may run as root,
    # whom file modes do not stop.)
    spool = spool_of(tmp_path / "spool", [click(campaign_id, 0, method="PURGE")])
    dead_letter = tmp_path / "dead-letter.jsonl"
    dead_letter.symlink_to("/dev/full")
    try:
        async with serving(collector_app(database_url)) as collector:
            shipper = new_shipper(spool, str(collector.make_url("")).rstrip("/"), tmp_path)
            async with running(shipper):

                def failures() -> list[logging.LogRecord]:
                    return [r for r in caplog.records if "cannot write the dead-letter file" in r.getMessage()]

                async def retried() -> bool:
                    return len(failures()) >= 2

                await eventually(retried)
                assert {r.levelno for r in failures()} == {logging.ERROR}
                assert "No space left on device" in failures()[0].getMessage()
                assert spool.unacknowledged_records == 1 and not spool.empty  # nothing lost, nothing moved past
                assert value(shipper._metrics.batch_dead_lettered) == 0

                dead_letter.unlink()  # room again: the next attempt writes the letter and moves on

                async def set_aside() -> bool:
                    return spool.empty

                await eventually(set_aside)
        (letter,) = [orjson.loads(line) for line in dead_letter.read_bytes().splitlines()]
        assert letter["status"] == 400 and letter["batch"]["clicks"][0][9] == "PURGE"
        assert value(shipper._metrics.batch_dead_lettered) == 1
    finally:
        spool.close()


async def test_a_failed_ledger_write_is_logged_and_costs_only_duplicates_after_a_restart(
    tmp_path: Path, database_url: str, db: asyncpg.Connection, campaign_id: int, caplog: pytest.LogCaptureFixture
) -> None:
    spool = spool_of(tmp_path / "spool", [click(campaign_id, n) for n in range(5)])
    # The ledger's write fails as on a full disk: its descriptor now writes to /dev/full, a real device whose
    # every write fails with ENOSPC. (A full filesystem cannot do it: the ledger is overwritten within a
    # block it already has, so it needs no new space.)
    full = os.open("/dev/full", os.O_WRONLY)
    os.dup2(full, spool._ack_fd)
    os.close(full)
    try:
        async with serving(collector_app(database_url)) as collector:
            url = str(collector.make_url("")).rstrip("/")
            shipper = new_shipper(spool, url, tmp_path)
            assert await shipper.ship_once() == MOVED
            (warning,) = [r for r in caplog.records if "could not record the acknowledged position" in r.getMessage()]
            assert warning.levelno == logging.WARNING and "No space left on device" in warning.getMessage()
            assert spool.stats.ledger_errors == 1
            assert spool.ledger_error is None  # said once: the next batch does not repeat it
            assert spool.empty and await rows(db, campaign_id) == 5
            await shipper.close()
            spool.close()

            # A restart: the ledger on disk never moved, so the clicks are sent again; the collector drops them.
            spool = Spool(tmp_path / "spool")
            spool.open()
            assert spool.count_records(spool.backlog()) == 5
            again = new_shipper(spool, url, tmp_path)
            assert await again.ship_once() == MOVED
            await again.close()
        assert value(again._metrics.clicks_duplicate) == 5
        assert await rows(db, campaign_id) == 5
    finally:
        spool.close()
    spool = Spool(tmp_path / "spool")  # the ledger was written again: a further restart sends nothing
    spool.open()
    try:
        assert spool.count_records(spool.backlog()) == 0
    finally:
        spool.close()


@pytest.mark.parametrize(
    ("reply", "duplicates"),
    [
        (b"OK\n", 0),
        (b"", 0),
        (b"[3]", 0),
        (b'{"duplicates": "three"}', 0),
        (b'{"duplicates": null}', 0),
        (b"\xff\xfe", 0),
        (b'{"inserted": 2, "duplicates": 3}', 3),  # the collector's own reply, for contrast
    ],
    ids=["text", "empty", "array", "string", "null", "not-utf8", "collector"],
)
async def test_a_200_is_shipped_whatever_its_body_says(tmp_path: Path, reply: bytes, duplicates: int) -> None:
    # A 200 comes after the collector's COMMIT, or from something in front of it that vouches for it: the
    # batch is acknowledged. What the body says only feeds the duplicate count.
    spool = spool_of(tmp_path / "spool", [click(1, n) for n in range(5)])

    async def handle(request: web.Request) -> web.Response:
        await request.read()
        return web.Response(body=reply, content_type="application/json")

    app = web.Application()
    app.router.add_post("/v1/clicks", handle)
    try:
        async with serving(app) as server:
            shipper = new_shipper(spool, str(server.make_url("")).rstrip("/"), tmp_path)
            async with running(shipper):

                async def shipped() -> bool:
                    return spool.empty

                await eventually(shipped)
        metrics = shipper._metrics
        assert value(metrics.batch_shipped) == 1 and value(metrics.clicks_shipped) == 5
        assert value(metrics.clicks_duplicate) == duplicates
        assert value(metrics.ship_errors) == value(metrics.batch_failed) == 0  # a 200, not a crash or a failure
    finally:
        spool.close()


async def test_a_413_makes_batches_smaller_and_a_click_too_large_alone_is_dead_lettered(
    tmp_path: Path, database_url: str, db: asyncpg.Connection, campaign_id: int
) -> None:
    # A proxy in front of the collector that takes bodies of at most 1,000 bytes (each click is about 150).
    clicks = [click(campaign_id, n) for n in range(40)]
    clicks.insert(20, click(campaign_id, 99, user_agent="\u00e9" * 512))  # 1,100 bytes alone
    clicks.insert(21, click(campaign_id, 98, user_agent="y" * 512))
    spool = spool_of(tmp_path / "spool", clicks)
    try:
        async with serving(collector_app(database_url)) as collector:
            upstream = str(collector.make_url("/v1/clicks"))

            async def proxy(request: web.Request) -> web.Response:
                body = await request.read()
                if len(body) > 1000:
                    return web.Response(status=413, text="Request Entity Too Large\n")
                async with (
                    aiohttp.ClientSession() as http,
                    http.post(upstream, data=body, headers=forwarded(request)) as resp,
                ):
                    return web.Response(status=resp.status, body=await resp.read(), headers=resp.headers)

            app = web.Application()
            app.router.add_post("/v1/clicks", proxy)
            async with serving(app) as server:
                shipper = new_shipper(spool, str(server.make_url("")).rstrip("/"), tmp_path)
                async with running(shipper):

                    async def drained() -> bool:
                        return spool.empty

                    await eventually(drained, timeout=30)
        assert await rows(db, campaign_id) == 41  # every click but the one too large even alone
        assert (
            await db.fetchval("SELECT count(*) FROM clicks WHERE campaign_id = $1 AND contact_id = 100", campaign_id)
            == 0
        )
        (letter,) = [orjson.loads(line) for line in (tmp_path / "dead-letter.jsonl").read_bytes().splitlines()]
        assert letter["status"] == 413 and len(letter["batch"]["clicks"]) == 1
        assert shipper._metrics.batch_dead_lettered._value.get() == 1
    finally:
        spool.close()


async def test_the_dead_letter_file_stays_within_its_share_of_the_spool_cap(
    tmp_path: Path, database_url: str, campaign_id: int
) -> None:
    # Clicks the collector refuses (a method it does not take), one per batch; the spool's cap is 64 KiB, so
    # the dead-letter file may hold 16 KiB: about ten such lines. The rest wait in the spool.
    refused = [click(campaign_id, n, method="PURGE", user_agent="z" * 400) for n in range(30)]
    spool = spool_of(tmp_path / "spool", refused, max_bytes=64 << 10, segment_bytes=16 << 10)
    try:
        async with serving(collector_app(database_url)) as collector:
            shipper = new_shipper(spool, str(collector.make_url("")).rstrip("/"), tmp_path, batch_size=1)
            assert shipper.dead_letter_max == 16 << 10
            async with running(shipper):
                dead_letter = tmp_path / "dead-letter.jsonl"

                def letters() -> int:
                    return len(dead_letter.read_bytes().splitlines()) if dead_letter.exists() else 0

                async def full() -> bool:
                    # No room for one more line, every line written is acknowledged in the spool, and the
                    # next refused batch was kept for later (a retry: the collector itself answers at once).
                    room = shipper.dead_letter_max - spool.external_bytes
                    kept = value(shipper._metrics.ship_retries) > 0
                    return 0 < room < 1500 and spool.unacknowledged_records == 30 - letters() and kept

                await eventually(full)
                assert dead_letter.stat().st_size <= shipper.dead_letter_max
                assert 0 < letters() < 30  # nothing dropped: the rest wait in the spool

                # An operator reads the file and moves it away: the rest follow.
                os.rename(dead_letter, tmp_path / "read.jsonl")

                async def all_set_aside() -> bool:
                    return spool.empty

                await eventually(all_set_aside, timeout=30)
        total = len((tmp_path / "read.jsonl").read_bytes().splitlines()) + len(dead_letter.read_bytes().splitlines())
        assert total == 30
    finally:
        spool.close()


async def test_a_read_that_finds_no_complete_record_waits_instead_of_spinning(tmp_path: Path) -> None:
    # Bytes after the last record that are not a whole record (say, a corrupt length at the end of the
    # active segment): the shipper must wait for more, not loop without ever awaiting.
    spool = spool_of(tmp_path / "spool", [])
    try:
        append_raw(spool, HEADER.pack(MAGIC, 0xFFFFFFFF, 0, bytes(16)) + b"zzzz")  # a length no record has
        shipper = new_shipper(spool, "http://127.0.0.1:9", tmp_path)
        assert await shipper.ship_once() == MOVED  # past the corrupt bytes, but the last (it may start a magic)
        assert spool.unacknowledged_bytes == 1
        assert await shipper.ship_once() == NOTHING_YET  # and there it stays until more is written
        async with running(shipper):
            shipper.wake.set()
            for _ in range(3):
                await asyncio.sleep(0.05)  # the loop turns: the shipper awaits (a spinning one never lets it)
        assert not shipper.wake.is_set()
    finally:
        spool.close()


async def test_a_drain_against_a_collector_that_keeps_refusing_stops_at_its_deadline(tmp_path: Path) -> None:
    spool = spool_of(tmp_path / "spool", [click(1, n) for n in range(3)])
    seen: list[int] = []
    try:
        async with serving(answering(503, seen)) as unavailable:
            shipper = new_shipper(spool, str(unavailable.make_url("")).rstrip("/"), tmp_path)
            loop = asyncio.get_running_loop()
            deadline = loop.time() + 1.0
            async with asyncio.timeout(30):  # it stops at its deadline, not whenever the collector relents
                await shipper.drain(deadline)
            assert loop.time() >= deadline  # it kept trying, backing off, until its deadline...
            assert len(seen) >= 2 and set(seen) == {503}
            assert spool.unacknowledged_records == 3  # ...and what it could not ship stays for the next start
            await shipper.close()
    finally:
        spool.close()


async def test_a_drain_stops_at_bytes_that_are_not_a_whole_record(tmp_path: Path) -> None:
    # What is left is not a complete record (it may be one being written when the process stopped): the next
    # start deals with it. The drain returns rather than waiting out its deadline for more.
    spool = spool_of(tmp_path / "spool", [])
    try:
        append_raw(spool, MAGIC)  # the start of a record, and no more
        shipper = new_shipper(spool, "http://127.0.0.1:9", tmp_path)
        loop = asyncio.get_running_loop()
        async with asyncio.timeout(30):
            await shipper.drain(loop.time() + 3600)
        assert spool.unacknowledged_bytes == len(MAGIC)
        await shipper.close()
    finally:
        spool.close()


async def test_the_shipper_survives_an_unexpected_exception(
    tmp_path: Path, database_url: str, db: asyncpg.Connection, campaign_id: int, caplog: pytest.LogCaptureFixture
) -> None:
    class Flaky(Spool):
        failures = 2

        def read_frames(self, view: SpoolView, limit: int, *, max_bytes: int = 1 << 62) -> Frames:
            if self.failures:
                self.failures -= 1
                raise RuntimeError("a bug in the shipper's path")
            return super().read_frames(view, limit, max_bytes=max_bytes)

    spool = Flaky(tmp_path / "spool")
    spool.open()
    ids = EventIds()
    for n in range(3):
        assert spool.append(ids.next_bytes(NOW_US // 1000), click(campaign_id, n))
    try:
        async with serving(collector_app(database_url)) as collector:
            shipper = new_shipper(spool, str(collector.make_url("")).rstrip("/"), tmp_path)
            async with running(shipper) as task:

                async def shipped() -> bool:
                    return spool.empty

                await eventually(shipped)
                assert not task.done()  # it went on: no crash, so no exit 70 and no skipped drain
        assert await rows(db, campaign_id) == 3
        assert shipper._metrics.ship_errors._value.get() == 2
        assert [r for r in caplog.records if "shipping failed unexpectedly" in r.getMessage()]
    finally:
        spool.close()


# -- the event loop that answers redirects does no file I/O for shipping ---------------------------------------


class LoopFileWatch:
    """Records a spool segment opened for reading, or the dead-letter file opened at all, on one thread."""

    def __init__(self) -> None:
        self.thread: int | None = None
        self.seen: list[str] = []

    def hook(self, event: str, args: tuple[Any, ...]) -> None:
        if event != "open" or self.thread != threading.get_ident() or not args:
            return
        path, mode = str(args[0]), args[1] if len(args) > 1 else None
        reading = isinstance(mode, str) and "r" in mode and "+" not in mode
        if (path.endswith(".seg") and reading) or path.endswith(".jsonl"):
            self.seen.append(path)


_watch = LoopFileWatch()
sys.addaudithook(_watch.hook)  # audit hooks cannot be removed: this one only records while armed


@pytest.fixture
def loop_watch() -> Iterator[LoopFileWatch]:
    _watch.thread, _watch.seen = threading.get_ident(), []
    try:
        yield _watch
    finally:
        _watch.thread = None


@pytest.fixture
async def slow_callbacks(caplog: pytest.LogCaptureFixture) -> AsyncIterator[Callable[[], list[str]]]:
    """Asyncio's debug mode, with a callback that runs longer than 0.5 s logged (and so caught here). Generous,
    because a busy CI machine stalls any callback now and then; the audit hook above catches file reads on
    the loop whatever they cost."""
    loop = asyncio.get_running_loop()
    debug, threshold = loop.get_debug(), loop.slow_callback_duration
    loop.set_debug(True)
    loop.slow_callback_duration = 0.5
    caplog.set_level(logging.WARNING, logger="asyncio")
    try:
        yield lambda: [r.getMessage() for r in caplog.records if r.name == "asyncio" and " took " in r.getMessage()]
    finally:
        loop.set_debug(debug)
        loop.slow_callback_duration = threshold


async def test_shipping_a_backlog_reads_the_spool_off_the_event_loop(
    tmp_path: Path,
    database_url: str,
    db: asyncpg.Connection,
    campaign_id: int,
    loop_watch: LoopFileWatch,
    slow_callbacks: Callable[[], list[str]],
) -> None:
    # A backlog an earlier process left (as after a restart during a collector outage): 4 MiB a batch.
    clicks = [click(campaign_id, n, user_agent="Mozilla/5.0 " + "b" * 400) for n in range(30_000)]
    spool = spool_of(tmp_path / "spool", clicks)
    try:
        # The collector's default hold: a batch is stored at once, and its verdicts come later (in debug mode
        # and under coverage, settling an 8,000-click batch in its ingest transaction can take seconds).
        async with serving(collector_app(database_url, hold=15.0)) as collector:
            shipper = new_shipper(spool, str(collector.make_url("")).rstrip("/"), tmp_path, batch_size=10_000)
            async with running(shipper):

                async def shipped() -> bool:
                    return spool.empty

                await eventually(shipped, timeout=60)
        assert await rows(db, campaign_id) == 30_000
        assert loop_watch.seen == []  # not one segment read on the event loop's thread
        # Nor did a step of the shipper's task hold the loop (the collector shares this loop here: its own
        # steps, and the test's, are not the edge's concern).
        assert not [m for m in slow_callbacks() if "coro=<Shipper.run()" in m]
    finally:
        spool.close()


# -- what goes on the wire, and when ---------------------------------------------------------------------------


def recording(batches: list[list[tuple[bytes, bytes]]], headers: list[dict[str, str]], spool: Spool) -> web.Application:
    """A stand-in for the collector that keeps each batch's records and headers and answers 200. While it answers
    the first batch, 300 more clicks reach the spool, as they do on a busy edge during a round trip."""

    async def handle(request: web.Request) -> web.Response:
        batches.append(frames.decode(await request.read(), 10_000))
        headers.append(dict(request.headers))
        if len(batches) == 1:
            ids = EventIds()
            for n in range(300):
                assert spool.append(ids.next_bytes(NOW_US // 1000), click(1, n))
        return web.json_response({"duplicates": 0})

    app = web.Application(client_max_size=64 << 20)
    app.router.add_post("/v1/clicks", handle)
    return app


async def test_a_batch_is_the_spools_own_records_and_a_busy_edge_sends_full_batches(tmp_path: Path) -> None:
    spool = spool_of(tmp_path / "spool", [click(1, n) for n in range(1000)])
    written = b"".join((spool.directory / _name(seg)).read_bytes() for seg in sorted(spool._sizes))
    batches: list[list[tuple[bytes, bytes]]] = []
    headers: list[dict[str, str]] = []
    try:
        async with serving(recording(batches, headers, spool)) as collector:
            # A linger no test waits out: a batch goes when it is full, and only then.
            shipper = new_shipper(spool, str(collector.make_url("")).rstrip("/"), tmp_path, batch_size=1000, linger=60)
            shipper.wake.set()  # what the redirect handler does after each batch_size clicks
            async with running(shipper):

                async def first_acknowledged() -> bool:
                    return len(batches) == 1 and spool.unacknowledged_records == 300

                await eventually(first_acknowledged)
                # 300 waiting is not a full batch: the shipper waits for more rather than send them at once.
                ids = EventIds()
                for n in range(700):
                    assert spool.append(ids.next_bytes(NOW_US // 1000), click(2, n))
                shipper.wake.set()

                async def shipped() -> bool:
                    return spool.empty

                await eventually(shipped)
        assert [len(b) for b in batches] == [1000, 1000]
        # The first batch is the bytes the spool wrote, as they are: every record intact, in order.
        assert b"".join(frames.frame(e, p) for e, p in batches[0]) == written
        assert headers[0]["Content-Type"] == SPOOL_CONTENT_TYPE and headers[0][EDGE_HEADER] == "test-edge"
    finally:
        spool.close()
