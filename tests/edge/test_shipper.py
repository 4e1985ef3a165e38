"""The shipper against real servers on real sockets: the collector itself, and servers standing in for what
else may answer at CLICKEDGE_COLLECTOR_URL (a wrong URL, a proxy with a body limit).

What each answer class must do: 404/405 and a 400 that is not the collector's are a configuration error
(retried, counted, nothing set aside); 413 makes batches smaller; only the collector's own refusal is
dead-lettered, and the dead-letter file stays within its share of the spool's cap. The shipper's loop never
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
from common.events import EventIds, click_payload
from edge.metrics import EdgeMetrics
from edge.shipper import MOVED, NOTHING_YET, Shipper
from edge.spool import HEADER, MAGIC, Batch, Spool, SpoolView, _name
from tests.collector.clock import RECENT_US
from tests.conftest import INGEST_SECRET, eventually

NOW_US = RECENT_US  # the collector takes only clicks near its clock


def click(campaign_id: int, n: int, method: str = "GET", user_agent: str = "test") -> bytes:
    return click_payload(NOW_US + n, campaign_id, 1, n + 1, 0, 1, "192.0.2.1", user_agent, method)


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
        secret=INGEST_SECRET,
        edge_name="test-edge",
        batch_size=kw.pop("batch_size", 100),
        linger=0.01,
        dead_letter=tmp_path / "dead-letter.jsonl",
        **kw,
    )


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


def collector_app(database_url: str) -> web.Application:
    return create_app(CollectorConfig(database_url=database_url, ingest_secret=INGEST_SECRET))


async def rows(db: asyncpg.Connection, campaign_id: int) -> int:
    return int(await db.fetchval("SELECT count(*) FROM clicks WHERE campaign_id = $1", campaign_id))


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
                    http.post(upstream, data=body, headers={"Authorization": request.headers["Authorization"]}) as resp,
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
                    # No room for one more line, and every line written is acknowledged in the spool.
                    room = shipper.dead_letter_max - spool.external_bytes
                    return 0 < room < 1500 and spool.unacknowledged_records == 30 - letters()

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
        fd = os.open(spool.directory / _name(spool.position.segment), os.O_WRONLY | os.O_APPEND)
        junk = HEADER.pack(MAGIC, 0xFFFFFFFF, 0, bytes(16)) + b"zzzz"  # a header with a length no record has
        os.write(fd, junk)
        os.close(fd)
        spool._sizes[spool.position.segment] += len(junk)
        spool._size += len(junk)
        spool._bytes += len(junk)
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


async def test_the_shipper_survives_an_unexpected_exception(
    tmp_path: Path, database_url: str, db: asyncpg.Connection, campaign_id: int, caplog: pytest.LogCaptureFixture
) -> None:
    class Flaky(Spool):
        failures = 2

        def read_from(self, view: SpoolView, limit: int, *, max_bytes: int = 1 << 62) -> Batch:
            if self.failures:
                self.failures -= 1
                raise RuntimeError("a bug in the shipper's path")
            return super().read_from(view, limit, max_bytes=max_bytes)

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
        async with serving(collector_app(database_url)) as collector:
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
