"""`clickedge edge --workers N`: N processes share the port, each ships its clicks, a dead one is replaced."""

from __future__ import annotations

import asyncio
import os
import signal
import sys
from pathlib import Path

import aiohttp
import asyncpg
from aiohttp.test_utils import TestServer

from clickedge.pgembed import free_port
from collector.app import create_app
from collector.config import CollectorConfig
from links import keys
from tests.conftest import INGEST_SECRET, eventually


async def start_edge(data_dir: Path, port: int, *options: str) -> asyncio.subprocess.Process:
    """`clickedge edge --workers 2` on ``port``."""
    return await asyncio.create_subprocess_exec(
        *[sys.executable, "-m", "clickedge", "edge", "--workers", "2", "--edge-port", str(port)],
        *["--data-dir", str(data_dir), *options],
    )


async def answering_workers(base: str) -> int:
    """How many worker pids answer /healthz over 20 new connections (the kernel picks one each time);
    0 if a connection fails."""
    pids = set()
    for _ in range(20):
        try:
            async with aiohttp.ClientSession() as http, http.get(f"{base}/healthz") as resp:
                pids.add(await resp.text())
        except aiohttp.ClientError:
            return 0
    return len(pids)


async def click_many(data_dir: Path, base: str, campaign_id: int, contacts: range) -> None:
    """One click per contact, each on a new connection, so the kernel spreads them over the workers."""
    codec = keys.load(data_dir / "keys.json").codec()
    for contact in contacts:
        token = codec.mint("https://example.com/", campaign_id=campaign_id, link_id=1, contact_id=contact, sent_at=0)
        async with aiohttp.ClientSession() as http, http.get(f"{base}/c/{token}", allow_redirects=False) as r:
            assert r.status == 302


async def clicks_in(db: asyncpg.Connection, campaign_id: int) -> tuple[int, int]:
    """The campaign's clicks in PostgreSQL, and how many edge workers shipped them."""
    row = await db.fetchrow(
        "SELECT count(*) AS n, count(DISTINCT edge) AS edges FROM clicks WHERE campaign_id = $1", campaign_id
    )
    assert row is not None
    return int(row["n"]), int(row["edges"])


def children(pid: int) -> set[int]:
    text = Path(f"/proc/{pid}/task/{pid}/children").read_text()
    return {int(p) for p in text.split()}


async def test_workers_share_the_port_and_are_restarted(
    database_url: str, db: asyncpg.Connection, data_dir: Path, campaign_id: int
) -> None:
    collector = TestServer(
        create_app(CollectorConfig(verdict_hold=0, database_url=database_url, ingest_secret=INGEST_SECRET))
    )
    await collector.start_server()
    port = free_port()
    proc = await start_edge(
        data_dir,
        port,
        "--collector-url",
        f"http://127.0.0.1:{collector.port}",
        "--batch-linger",
        "0.05",
        "--drain-grace",
        "0",
    )
    base = f"http://127.0.0.1:{port}"
    try:

        async def both_listening() -> bool:
            return await answering_workers(base) == 2 and len(children(proc.pid)) == 2

        await eventually(both_listening, timeout=30)

        await click_many(data_dir, base, campaign_id, range(1, 41))

        async def spread() -> bool:
            return await clicks_in(db, campaign_id) == (40, 2)

        await eventually(spread, timeout=15)

        victim = min(children(proc.pid))
        os.kill(victim, signal.SIGKILL)

        async def replaced() -> bool:
            now = children(proc.pid)
            return victim not in now and len(now) == 2

        await eventually(replaced, timeout=30)
        await eventually(both_listening, timeout=30)
        await click_many(data_dir, base, campaign_id, range(100, 110))

        async def all_in() -> bool:
            n = await db.fetchval("SELECT count(*) FROM clicks WHERE campaign_id = $1", campaign_id)
            return bool(n == 50)

        await eventually(all_in, timeout=15)
    finally:
        proc.send_signal(signal.SIGTERM)
        async with asyncio.timeout(30):
            code = await proc.wait()
        await collector.close()
    assert code == 0


async def test_a_stop_signalled_to_every_process_at_once_still_drains(
    database_url: str, db: asyncpg.Connection, data_dir: Path, campaign_id: int
) -> None:
    # systemd's default KillMode signals every process of the unit, and the supervisor passes the signal
    # on too, so each worker gets two SIGTERMs in quick succession. They are one request to stop: the
    # drain still runs, every click in flight is shipped, and every worker exits 0.
    collector = TestServer(
        create_app(CollectorConfig(verdict_hold=0, database_url=database_url, ingest_secret=INGEST_SECRET))
    )
    await collector.start_server()
    port = free_port()
    # A batch ships when it is full (1,000 clicks) or has waited a minute: the clicks below are still in
    # the workers' spools when the stop comes, and only the drain can ship them.
    proc = await start_edge(
        data_dir,
        port,
        *("--collector-url", f"http://127.0.0.1:{collector.port}", "--batch-linger", "60"),
        *("--drain-grace", "1", "--shutdown-timeout", "10"),
    )
    base = f"http://127.0.0.1:{port}"

    async def both_ready() -> bool:
        return await answering_workers(base) == 2

    try:
        await eventually(both_ready, timeout=30)
        await click_many(data_dir, base, campaign_id, range(1, 41))
        assert await clicks_in(db, campaign_id) == (0, 0)  # all 40 in flight, none shipped yet
        # As systemd does: every process of the unit at once, the supervisor passing its own on as well.
        for pid in [*children(proc.pid), proc.pid]:
            os.kill(pid, signal.SIGTERM)
    except BaseException:
        proc.send_signal(signal.SIGTERM)  # a failure before the stop: stop it anyway, or the wait never ends
        raise
    finally:
        async with asyncio.timeout(30):
            code = await proc.wait()
        await collector.close()
    assert code == 0  # every worker drained and exited 0, none was cut short
    assert await clicks_in(db, campaign_id) == (40, 2)  # every click shipped, by both workers' drains


async def test_a_worker_whose_event_loop_stops_is_killed_and_replaced(data_dir: Path) -> None:
    # SIGSTOP freezes a worker as a stuck event loop would: no /healthz, no reaction to SIGTERM, no exit.
    # Its heartbeat stops; the supervisor kills it and starts another in its slot.
    port = free_port()
    proc = await start_edge(
        data_dir, port, "--collector-url", "http://127.0.0.1:9", "--watchdog-timeout", "1", "--drain-grace", "0"
    )
    base = f"http://127.0.0.1:{port}"
    try:

        async def both_listening() -> bool:
            return len(children(proc.pid)) == 2 and await answering_workers(base) == 2

        await eventually(both_listening, timeout=30)
        frozen = min(children(proc.pid))
        os.kill(frozen, signal.SIGSTOP)

        async def replaced() -> bool:
            now = children(proc.pid)
            return frozen not in now and len(now) == 2

        await eventually(replaced, timeout=15)
        await eventually(both_listening, timeout=30)
    finally:
        proc.send_signal(signal.SIGTERM)
        async with asyncio.timeout(30):
            code = await proc.wait()
    assert code == 0


async def test_an_edge_restarted_right_after_serving_keep_alive_traffic_comes_up(data_dir: Path) -> None:
    # Stopping closes the clients' keep-alive connections from the edge's side, which leaves them in
    # TIME-WAIT on the edge's port for a minute. Nothing listens there: starting again must work at once.
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    options = ("--collector-url", "http://127.0.0.1:9", "--drain-grace", "0", "--shutdown-timeout", "1")
    for attempt in range(2):
        proc = await start_edge(data_dir, port, *options)
        try:

            async def both_listening(pid: int = proc.pid) -> bool:
                return len(children(pid)) == 2 and await answering_workers(base) == 2

            await eventually(both_listening, timeout=30)
            async with aiohttp.ClientSession() as http:  # one keep-alive connection, many requests
                for _ in range(20):
                    async with http.get(f"{base}/healthz") as resp:
                        assert resp.status == 200
                proc.send_signal(signal.SIGTERM)
                async with asyncio.timeout(30):
                    code = await proc.wait()
        finally:
            if proc.returncode is None:
                proc.kill()
                await proc.wait()
        assert code == 0, f"start {attempt + 1} exited with {code}"
