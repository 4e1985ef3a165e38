"""Faults behind the edge: the collector down, PostgreSQL restarted, and a faulty network between the
collector and PostgreSQL (latency, resets mid-batch, the reply to COMMIT lost). Real processes; the
proxy is an asyncio TCP relay inside the test."""

from __future__ import annotations

import asyncio
import contextlib
import functools
import shutil
import statistics
import tempfile
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from urllib.parse import urlsplit

import asyncpg
import pytest

from clickedge.pgembed import EmbeddedPostgres, free_port
from collector.schema import migrate_dsn
from tests.collector.derived import recount
from tests.conftest import eventually
from tests.faults.harness import (
    CollectorProc,
    EdgeProc,
    Load,
    assert_exactly_once,
    drive,
    metric,
    token_stream,
    tokens,
    wait_http,
)


@pytest.fixture
def own_postgres() -> Iterator[EmbeddedPostgres]:
    """A PostgreSQL of this test's own, to restart without disturbing the others."""
    root = Path(tempfile.mkdtemp(prefix="clickedge-pg-restart-"))
    pg = EmbeddedPostgres(root / "pg", free_port())
    pg.init()
    asyncio.run(pg.start())
    asyncio.run(migrate_dsn(pg.dsn))
    try:
        yield pg
    finally:
        pg.stop()
        shutil.rmtree(root, ignore_errors=True)


async def counters_wrong(dsn: str, campaign_id: int) -> dict[str, object]:
    """Every report table against a recount from the click rows (assert_exactly_once sums one of them)."""
    conn = await asyncpg.connect(dsn)
    try:
        return dict(await recount(conn, campaign_id))
    finally:
        await conn.close()


def p99(values: list[float]) -> float:
    return statistics.quantiles(values, n=100)[98]


async def test_collector_outage_under_load_keeps_redirects_fast_and_loses_nothing(
    database_url: str, data_dir: Path, campaign_id: int
) -> None:
    collector = CollectorProc(database_url)
    await collector.start()
    await wait_http(f"{collector.url}/readyz")
    edge = EdgeProc(data_dir, collector.port)
    await edge.start()
    try:
        await wait_http(f"{edge.url}/readyz")
        before = await drive(edge.url, tokens(data_dir, campaign_id, 1000))
        await assert_exactly_once(database_url, campaign_id, before.answered, sent=before.attempted)

        async def all_acknowledged() -> bool:
            return await metric(edge.url, "clickedge_edge_spool_records") == 0

        await eventually(all_acknowledged)  # nothing in flight when the collector goes
        assert await collector.stop() == 0

        during = await drive(edge.url, tokens(data_dir, campaign_id, 3000, first=1000))
        # Every recipient landed while the collector was gone, and no redirect waited for it: a
        # blocked redirect would take seconds (the client gives up after 5); these are milliseconds.
        assert during.failed == 0 and len(during.answered) == 3000
        print(
            f"redirect p99 before the outage {p99(before.latencies) * 1000:.2f} ms, "
            f"during it {p99(during.latencies) * 1000:.2f} ms"
        )
        assert p99(during.latencies) < 0.5
        assert await metric(edge.url, "clickedge_edge_spool_records") == 3000  # the backlog is on disk, all of it
        assert await metric(edge.url, "clickedge_edge_spool_oldest_unacked_seconds") > 0

        await collector.start()  # the same port: the edge catches up by itself
        await assert_exactly_once(
            database_url,
            campaign_id,
            before.answered | during.answered,
            sent=before.attempted | during.attempted,
        )
        assert await counters_wrong(database_url, campaign_id) == {}
    finally:
        assert await edge.stop() == 0
        await collector.stop()


async def test_postgres_restart_under_load(own_postgres: EmbeddedPostgres, data_dir: Path, campaign_id: int) -> None:
    collector = CollectorProc(own_postgres.dsn)
    await collector.start()
    await wait_http(f"{collector.url}/readyz")
    edge = EdgeProc(data_dir, collector.port, "--batch-size", "200")
    await edge.start()
    try:
        await wait_http(f"{edge.url}/readyz")
        load, enough = Load(), asyncio.Event()
        driver = asyncio.create_task(drive(edge.url, token_stream(data_dir, campaign_id), load=load, until=enough))

        async def answered_since(count: int) -> bool:
            return len(load.answered) >= count + 500

        failed = 'outcome="failed"'
        await eventually(functools.partial(answered_since, 0))  # under load
        failed_before = await metric(edge.url, "clickedge_edge_batches_total", failed)
        await asyncio.to_thread(own_postgres.stop)
        await wait_http(f"{collector.url}/readyz", status=503)  # the collector notices...
        outage = set(load.answered)

        async def shipping_fails() -> bool:
            return await metric(edge.url, "clickedge_edge_batches_total", failed) > failed_before

        # The restart overlaps shipping: batches fail while PostgreSQL is down, and clicks go on being answered.
        await eventually(shipping_fails)
        await eventually(functools.partial(answered_since, len(outage)))
        during = set(load.answered) - outage
        await own_postgres.start()
        await wait_http(f"{collector.url}/readyz")  # ...and reconnects by itself
        await eventually(functools.partial(answered_since, len(load.answered)))  # and after
        enough.set()
        await driver
        assert load.failed == 0
        got = await assert_exactly_once(own_postgres.dsn, campaign_id, load.answered, sent=load.attempted)
        # The clicks answered while PostgreSQL was down (at least 500, above) arrived after it came back: they
        # are among the clicks just found exactly once.
        assert len(during) >= 500 and during <= set(got)
    finally:
        assert await edge.stop() == 0
        await collector.stop()


class FaultProxy:
    """A TCP relay between the collector and PostgreSQL that can delay, reset or drop a reply."""

    COMMIT_COMPLETE = b"C\x00\x00\x00\x0bCOMMIT\x00"  # the server's CommandComplete for COMMIT

    def __init__(self, target_port: int) -> None:
        self.target_port = target_port
        self.latency = 0.0
        self.resets_mid_copy = 0  # reset this many connections just after a COPY starts
        self.lost_commit_replies = 0  # swallow the reply to this many COMMITs, then cut the connection
        self.resets_done = 0
        self.replies_lost = 0
        self._server: asyncio.Server | None = None
        self._conns: set[asyncio.Task[None]] = set()

    @property
    def port(self) -> int:
        assert self._server is not None
        return int(self._server.sockets[0].getsockname()[1])

    async def start(self) -> None:
        self._server = await asyncio.start_server(self._accept, "127.0.0.1", 0)

    async def close(self) -> None:
        assert self._server is not None
        self._server.close()
        for task in list(self._conns):
            task.cancel()
        await asyncio.gather(*self._conns, return_exceptions=True)

    async def _accept(self, client_r: asyncio.StreamReader, client_w: asyncio.StreamWriter) -> None:
        try:
            server_r, server_w = await asyncio.open_connection("127.0.0.1", self.target_port)
        except OSError:
            client_w.close()
            return
        cut = asyncio.Event()

        async def pump(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, upstream: bool) -> None:
            try:
                while not cut.is_set():
                    data = await reader.read(65536)
                    if not data:
                        break
                    if self.latency:
                        await asyncio.sleep(self.latency)  # the fault being injected: network latency
                    if upstream and self.resets_mid_copy and b"COPY " in data:
                        self.resets_mid_copy -= 1
                        self.resets_done += 1
                        writer.write(data[: len(data) // 2])  # half the COPY reaches the server, then RST
                        cut.set()
                        break
                    if not upstream and self.lost_commit_replies and self.COMMIT_COMPLETE in data:
                        # The server has committed; its answer never reaches the collector.
                        self.lost_commit_replies -= 1
                        self.replies_lost += 1
                        cut.set()
                        break
                    writer.write(data)
                    await writer.drain()
            except (ConnectionError, OSError):
                pass
            finally:
                cut.set()
                for w in (client_w, server_w):
                    if w.transport is not None:
                        w.transport.abort()  # a reset, not a polite close

        task = asyncio.current_task()
        assert task is not None
        self._conns.add(task)
        try:
            await asyncio.gather(pump(client_r, server_w, True), pump(server_r, client_w, False))
        finally:
            self._conns.discard(task)


@contextlib.asynccontextmanager
async def proxy_to(port: int) -> AsyncIterator[FaultProxy]:
    proxy = FaultProxy(port)
    await proxy.start()
    try:
        yield proxy
    finally:
        await proxy.close()


async def test_network_faults_between_collector_and_postgres(
    database_url: str, data_dir: Path, campaign_id: int
) -> None:
    target = urlsplit(database_url)
    async with proxy_to(target.port or 5432) as proxy:
        via_proxy = database_url.replace(f"{target.hostname}:{target.port}", f"127.0.0.1:{proxy.port}")
        collector = CollectorProc(via_proxy)
        await collector.start()
        await wait_http(f"{collector.url}/readyz")
        edge = EdgeProc(data_dir, collector.port, "--batch-size", "100")
        await edge.start()
        try:
            await wait_http(f"{edge.url}/readyz")
            answered: set[tuple[int, int]] = set()
            attempted: set[tuple[int, int]] = set()
            first = 0
            for phase in ("latency", "reset mid-batch", "reply lost after COMMIT"):
                if phase == "latency":
                    proxy.latency = 0.02
                elif phase == "reset mid-batch":
                    proxy.resets_mid_copy = 3
                else:
                    proxy.lost_commit_replies = 3
                load = await drive(edge.url, tokens(data_dir, campaign_id, 1000, first=first))
                assert load.failed == 0, phase
                answered |= load.answered
                attempted |= load.attempted
                first += 1000
                await assert_exactly_once(database_url, campaign_id, answered, sent=attempted)
                assert await counters_wrong(database_url, campaign_id) == {}, phase
                proxy.latency = 0.0
            assert proxy.resets_done == 3
            assert proxy.replies_lost == 3
            # The batches whose COMMIT reply was lost were sent again and found already written.
            assert await metric(collector.url, "clickedge_collector_clicks_duplicate_total") > 0
        finally:
            assert await edge.stop() == 0
            await collector.stop()
