"""Edge faults on real processes: kill -9, corrupt spools, a full disk, replays, SIGTERM under load.

Each test drives clicks with distinct tokens (a distinct contact x link per request), remembers which got
a 302, and ends by comparing that with PostgreSQL: none missing, none written twice.
"""

from __future__ import annotations

import asyncio
import functools
import os
import shutil
import signal
from collections.abc import AsyncIterator
from pathlib import Path

import asyncpg
import orjson
import pytest

from common.events import EventIds, click_payload
from edge.spool import HEADER_SIZE, Spool, frame, parse
from tests.collector.clock import RECENT_US
from tests.collector.derived import Rows, recount
from tests.collector.derived import snapshot as snapshot_of
from tests.conftest import eventually
from tests.faults.harness import (
    CollectorProc,
    EdgeProc,
    Load,
    assert_exactly_once,
    chaos,
    drive,
    metric,
    rows,
    tiny_filesystem,
    token_stream,
    tokens,
    wait_http,
)


@pytest.fixture
async def collector_proc(database_url: str) -> AsyncIterator[CollectorProc]:
    proc = CollectorProc(database_url)
    await proc.start()
    await wait_http(f"{proc.url}/readyz")
    yield proc
    await proc.stop()


def children(pid: int) -> set[int]:
    return {int(p) for p in Path(f"/proc/{pid}/task/{pid}/children").read_text().split()}


def append_bytes(path: Path, data: bytes) -> None:
    with open(path, "ab") as f:
        f.write(data)


def segments(spool: Path) -> list[Path]:
    return sorted(spool.glob("*.seg"))


async def test_the_load_driver_sends_each_click_once_when_a_kept_alive_connection_breaks() -> None:
    # The fault tests count a click that reached PostgreSQL twice as a bug, so the driver must never send a
    # token twice. A server that answers the first request on each connection and drops the connection on
    # reading the second (as an edge worker killed just then): aiohttp alone would send the second again.
    seen: list[str] = []

    async def serve(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        for answered in (False, True):
            try:
                head = await reader.readuntil(b"\r\n\r\n")
            except (asyncio.IncompleteReadError, ConnectionError):
                break
            seen.append(head.split(b" ")[1].decode())
            if answered:
                writer.transport.abort()
                return
            writer.write(b"HTTP/1.1 302 Found\r\nLocation: /\r\nContent-Length: 0\r\n\r\n")
        writer.close()

    server = await asyncio.start_server(serve, "127.0.0.1", 0)
    try:
        port = server.sockets[0].getsockname()[1]
        work = [((n, 0), f"token-{n}") for n in range(4)]
        load = await drive(f"http://127.0.0.1:{port}", work, concurrency=1)
    finally:
        server.close()
    assert seen == [f"/c/token-{n}" for n in range(4)]  # each sent once, none again
    assert load.answered == {(0, 0), (2, 0)} and load.failed == 2


async def test_kill_9_of_edge_workers_loses_no_answered_click(
    database_url: str, collector_proc: CollectorProc, data_dir: Path, campaign_id: int
) -> None:
    edge = EdgeProc(data_dir, collector_proc.port, "--workers", "2")
    await edge.start()
    try:
        await wait_http(f"{edge.url}/readyz")
        load, enough = Load(), asyncio.Event()
        kills = 0
        rng = chaos("kill -9")

        async def killer() -> None:
            # Five kills at random moments, each while clicks are being answered: the load runs until they
            # are done, and each kill waits for the load to go on again after the one before.
            nonlocal kills
            try:
                for _ in range(5):
                    await eventually(functools.partial(answered_since, len(load.answered)), timeout=60)
                    await asyncio.sleep(rng.uniform(0.1, 0.4))  # a random moment, not a synchronisation
                    workers = children(edge.pid)
                    if workers:
                        os.kill(rng.choice(sorted(workers)), signal.SIGKILL)
                        kills += 1
            finally:
                enough.set()

        async def answered_since(count: int) -> bool:
            return len(load.answered) >= count + 100

        work = token_stream(data_dir, campaign_id)
        await asyncio.gather(drive(edge.url, work, concurrency=16, load=load, until=enough), killer())
        assert kills == 5
        # How many were answered depends on when the kills fell (a killed worker's connections fail until
        # the supervisor restarts it); what must hold is that each answered click arrives exactly once.
        assert load.answered
        await assert_exactly_once(database_url, campaign_id, load.answered, sent=load.attempted)
    finally:
        assert await edge.stop() == 0


async def test_truncated_and_bit_flipped_spool_segments_at_start(
    database_url: str, data_dir: Path, campaign_id: int
) -> None:
    collector = CollectorProc(database_url)
    spool_args = ("--spool-segment-bytes", "4096")
    edge = EdgeProc(data_dir, collector.port, *spool_args)  # no collector yet: clicks stay spooled
    await edge.start()
    await wait_http(f"{edge.url}/readyz")
    load = await drive(edge.url, tokens(data_dir, campaign_id, 200))
    assert load.failed == 0
    await edge.kill()

    spool = data_dir / "spool" / "worker-0"
    segs = segments(spool)
    assert len(segs) >= 3
    # Flip one bit in the payload of the third record of the first segment...
    first = segs[0].read_bytes()
    records = parse(first).records
    victim_payload = records[2][1]
    offset = 2 * (HEADER_SIZE + len(records[0][1]))
    assert first[offset + HEADER_SIZE :].startswith(victim_payload)
    flipped = bytearray(first)
    flipped[offset + HEADER_SIZE + 5] ^= 0x04
    segs[0].write_bytes(bytes(flipped))
    victim = orjson.loads(victim_payload)
    lost = (victim[3], victim[2])  # (contact, link)
    # ...and leave a torn record at the end of the last one, as a crash in the middle of write() would.
    append_bytes(segs[-1], frame(b"\x00" * 16, b"[1,2,3]")[:20])

    await collector.start()
    await wait_http(f"{collector.url}/readyz")
    again = EdgeProc(data_dir, collector.port, *spool_args, port=edge.port)
    await again.start()
    try:
        await wait_http(f"{again.url}/readyz")
        await assert_exactly_once(database_url, campaign_id, load.answered - {lost}, sent=load.answered)
        assert lost not in await rows(database_url, campaign_id)
        assert await metric(again.url, "clickedge_edge_spool_corrupt_records_total") == 1
        assert await metric(again.url, "clickedge_edge_spool_truncated_bytes_total") == 20
        assert await metric(again.url, "clickedge_edge_spool_replayed_records_total") == 199
    finally:
        assert await again.stop() == 0
        await collector.stop()


@pytest.mark.parametrize("segment_bytes", [8192, 16 << 20], ids=["small-segments", "disk-fills-inside-one-segment"])
async def test_full_disk_keeps_redirecting_then_recovers(
    database_url: str, data_dir: Path, campaign_id: int, segment_bytes: int
) -> None:
    collector = CollectorProc(database_url)
    with tiny_filesystem(64) as spool_dir:
        args = ("--spool-dir", str(spool_dir), "--spool-segment-bytes", str(segment_bytes), "--batch-size", "100")
        edge = EdgeProc(data_dir, collector.port, *args)
        await edge.start()
        try:
            await wait_http(f"{edge.url}/readyz")
            first = await drive(edge.url, tokens(data_dir, campaign_id, 1500), concurrency=8)
            # The disk is full: every recipient still landed, the load balancer is told, the loss counted.
            assert first.failed == 0 and len(first.answered) == 1500
            await wait_http(f"{edge.url}/readyz", status=503)
            undurable = await metric(edge.url, "clickedge_edge_clicks_undurable_total")
            assert undurable > 500

            await collector.start()  # shipping frees the disk; the edge notices by itself, with no traffic
            await wait_http(f"{collector.url}/readyz")
            await wait_http(f"{edge.url}/readyz", timeout=30)
            second = await drive(edge.url, tokens(data_dir, campaign_id, 200, first=1501), concurrency=8)
            assert second.failed == 0
            assert await metric(edge.url, "clickedge_edge_clicks_undurable_total") == undurable

            got = await assert_exactly_once(
                database_url,
                campaign_id,
                second.answered,
                sent=first.answered | second.answered,
            )
            durable_first = len([c for c in got if c in first.answered])
            assert durable_first == 1500 - undurable  # only the counted ones are missing
        finally:
            assert await edge.stop() == 0
            await collector.stop()


async def test_the_same_spool_replayed_twice_changes_nothing(
    database_url: str, data_dir: Path, campaign_id: int
) -> None:
    collector = CollectorProc(database_url)
    # No collector yet: nothing can be shipped, so the stop does not try (the default would for 10 s).
    edge = EdgeProc(data_dir, collector.port, "--shutdown-timeout", "0")
    await edge.start()
    await wait_http(f"{edge.url}/readyz")
    load = await drive(edge.url, tokens(data_dir, campaign_id, 300))
    assert load.failed == 0
    async with asyncio.timeout(30):
        assert await edge.stop() == 0  # everything stays spooled
    spool = data_dir / "spool" / "worker-0"
    copy = data_dir / "spool-copy"
    shutil.copytree(spool, copy)

    await collector.start()
    await wait_http(f"{collector.url}/readyz")

    async def snapshot() -> dict[str, Rows]:
        conn = await asyncpg.connect(database_url)
        try:
            assert await recount(conn, campaign_id) == {}  # every counter equals its recount from the clicks
            return await snapshot_of(conn, campaign_id)  # every table ingest and the link actions write
        finally:
            await conn.close()

    try:
        for attempt in range(2):
            if attempt:
                shutil.rmtree(spool)
                shutil.copytree(copy, spool)  # the same unacknowledged spool, once more
            replay = EdgeProc(data_dir, collector.port, port=edge.port)
            await replay.start()
            await wait_http(f"{replay.url}/readyz")
            await assert_exactly_once(database_url, campaign_id, load.answered, sent=load.answered)
            if attempt == 0:
                before = await snapshot()
            else:

                async def all_replayed(url: str = replay.url) -> bool:
                    return await metric(url, "clickedge_edge_clicks_duplicate_total") == 300

                await eventually(all_replayed, timeout=30)
                assert await snapshot() == before
            assert await replay.stop() == 0
    finally:
        await collector.stop()


async def test_sigterm_under_load_fails_no_request_and_loses_no_click(
    database_url: str, collector_proc: CollectorProc, data_dir: Path, campaign_id: int
) -> None:
    edge = EdgeProc(data_dir, collector_proc.port, "--drain-grace", "1.0")
    await edge.start()
    await wait_http(f"{edge.url}/readyz")
    load = Load()

    async def terminate() -> None:
        await under_load(load)
        assert edge.proc is not None
        edge.proc.send_signal(signal.SIGTERM)

    # Without end, until /readyz says the edge is draining.
    work = token_stream(data_dir, campaign_id)
    await asyncio.gather(drive(edge.url, work, load=load, stop_when_not_ready=True), terminate())
    assert load.failed == 0 and len(load.answered) >= 500
    assert edge.proc is not None
    async with asyncio.timeout(30):
        assert await edge.proc.wait() == 0  # the one SIGTERM: drained, shipped, exited cleanly
    await assert_exactly_once(database_url, campaign_id, load.answered, sent=load.attempted)


async def test_clicks_answered_during_the_drain_are_shipped_before_exit(
    database_url: str, collector_proc: CollectorProc, data_dir: Path, campaign_id: int
) -> None:
    # A client that ignores /readyz keeps clicking through the grace period until the edge stops
    # accepting: every click it got a 302 for must still be shipped before the edge exits.
    edge = EdgeProc(data_dir, collector_proc.port, "--drain-grace", "2")
    await edge.start()
    await wait_http(f"{edge.url}/readyz")
    load, gone = Load(), asyncio.Event()
    before_signal: set[tuple[int, int]] = set()

    async def terminate() -> int:
        await under_load(load)
        assert edge.proc is not None
        before_signal.update(load.answered)
        edge.proc.send_signal(signal.SIGTERM)
        try:
            async with asyncio.timeout(30):
                return await edge.proc.wait()
        finally:
            gone.set()  # the client stops once the edge has exited

    _, code = await asyncio.gather(
        drive(edge.url, token_stream(data_dir, campaign_id), load=load, until=gone), terminate()
    )
    assert code == 0
    assert load.failed > 0 and len(load.answered) >= 500  # it kept going until the edge closed
    assert load.answered - before_signal  # and clicks were answered during the drain (then shipped, below)
    assert await asyncio.to_thread(spooled_records, data_dir / "spool" / "worker-0") == 0
    await assert_exactly_once(database_url, campaign_id, load.answered, sent=load.attempted, timeout=5)


async def under_load(load: Load) -> None:
    """Return once the driver has had 500 clicks answered: load has built up."""

    async def answered() -> bool:
        return len(load.answered) >= 500

    await eventually(answered, timeout=30)


def spooled_records(spool: Path) -> int:
    """Records left unacknowledged in a stopped edge's spool."""
    left = Spool(spool)
    left.open()
    try:
        return left.count_records(left.backlog())
    finally:
        left.close()


async def test_a_batch_the_collector_refuses_is_dead_lettered_and_the_rest_flows(
    database_url: str, data_dir: Path, campaign_id: int
) -> None:
    # A spool holding one click the collector can never accept (a method it refuses) between good ones,
    # as a bug in an older edge version might have left it.
    good = tokens(data_dir, campaign_id, 6)
    spool = Spool(data_dir / "spool" / "worker-0")
    spool.open()
    ids = EventIds()
    for n, ((contact, link), _) in enumerate(good):
        method = "PURGE" if n == 3 else "GET"
        payload = click_payload(RECENT_US + n, campaign_id, link, contact, 0, 1, "192.0.2.1", "ua", method, 0)
        assert spool.append(ids.next_bytes(RECENT_US // 1000), payload)
    spool.close()
    refused = good[3][0]

    collector = CollectorProc(database_url)
    await collector.start()
    await wait_http(f"{collector.url}/readyz")
    edge = EdgeProc(data_dir, collector.port, "--batch-size", "1")
    await edge.start()
    try:
        await wait_http(f"{edge.url}/readyz")
        expected = {key for key, _ in good} - {refused}
        await assert_exactly_once(database_url, campaign_id, expected, sent=expected)
        assert await metric(edge.url, "clickedge_edge_clicks_dead_lettered_total") == 1
        dead = (data_dir / "spool" / "dead-letter-worker-0.jsonl").read_text().splitlines()
        assert len(dead) == 1
        letter = orjson.loads(dead[0])
        assert letter["status"] == 400 and "clicks[0].method" in letter["error"]
        assert letter["batch"]["clicks"][0][9] == "PURGE"
    finally:
        assert await edge.stop() == 0
        await collector.stop()


async def test_a_forwarded_address_with_a_huge_zone_is_recorded_and_the_worker_stays_healthy(
    database_url: str, collector_proc: CollectorProc, data_dir: Path, campaign_id: int
) -> None:
    # The reviewer's reproduction: from a trusted proxy, an IPv6 zone of 5,000 bytes. It used to make a
    # record larger than the spool's reader takes: the shipper spun without awaiting (no /healthz, SIGTERM
    # ignored) and a restart cut the answered click off as a torn tail.
    ((key, token),) = tokens(data_dir, campaign_id, 1)
    edge = EdgeProc(data_dir, collector_proc.port, "--trusted-proxies", "127.0.0.2")
    await edge.start()
    await wait_http(f"{edge.url}/readyz")
    reader, writer = await asyncio.open_connection("127.0.0.1", edge.port, local_addr=("127.0.0.2", 0))
    zone = b"fe80::1%" + b"z" * 5000
    writer.write(b"GET /c/" + token.encode() + b" HTTP/1.1\r\nHost: t\r\nX-Forwarded-For: " + zone + b"\r\n\r\n")
    assert (await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 5)).startswith(b"HTTP/1.1 302 ")
    writer.close()
    await assert_exactly_once(database_url, campaign_id, {key}, sent={key})
    conn = await asyncpg.connect(database_url)
    try:
        address = await conn.fetchval(
            """SELECT host(client_ip) FROM clicks WHERE campaign_id = $1
               UNION SELECT host(client_ip) FROM pending_clicks WHERE campaign_id = $1""",
            campaign_id,
        )
    finally:
        await conn.close()
    assert address == "fe80::1"
    await wait_http(f"{edge.url}/healthz", timeout=5)  # the worker still answers
    assert await edge.stop(timeout=15) == 0  # and stops on SIGTERM, drained
