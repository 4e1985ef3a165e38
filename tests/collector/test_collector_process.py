"""The collector as a process: graceful drain on SIGTERM, with a batch in flight."""

from __future__ import annotations

import asyncio
import signal

import aiohttp
import asyncpg
import orjson

from tests.collector.test_ingest import batch
from tests.conftest import INGEST_SECRET, eventually
from tests.faults.harness import CollectorProc, wait_http

GRACE = 8.0  # long enough for the probes below to see it on a busy machine


async def test_sigterm_finishes_the_batch_in_flight_then_exits_0(
    database_url: str, db: asyncpg.Connection, campaign_id: int
) -> None:
    proc = CollectorProc(database_url)
    proc.args += ["--drain-grace", str(GRACE)]
    await proc.start()
    await wait_http(f"{proc.url}/readyz")
    assert proc.proc is not None
    # A batch in flight: its write waits on a lock this test holds.
    blocker = await asyncpg.connect(database_url)
    lock = blocker.transaction()
    await lock.start()
    await blocker.execute("LOCK TABLE pending_clicks IN ACCESS EXCLUSIVE MODE")
    try:
        async with aiohttp.ClientSession() as http:
            posted = asyncio.create_task(
                http.post(
                    f"{proc.url}/v1/clicks",
                    data=orjson.dumps(batch(campaign_id, 5)),
                    headers={"Authorization": f"Bearer {INGEST_SECRET}"},
                )
            )

            async def waiting_on_the_lock() -> bool:
                return bool(
                    await db.fetchval(
                        "SELECT count(*) FROM pg_locks WHERE relation = 'pending_clicks'::regclass AND NOT granted"
                    )
                )

            await eventually(waiting_on_the_lock)
            proc.proc.send_signal(signal.SIGTERM)

            async def not_ready_but_serving() -> bool:
                async with http.get(f"{proc.url}/readyz") as ready, http.get(f"{proc.url}/healthz") as health:
                    return ready.status == 503 and health.status == 200

            await eventually(not_ready_but_serving, timeout=GRACE)  # told the balancer, and still serving

            async def no_longer_accepting() -> bool:
                try:
                    _, writer = await asyncio.open_connection("127.0.0.1", proc.port)
                except OSError:
                    return True
                writer.close()
                return False

            await eventually(no_longer_accepting, timeout=GRACE + 10)  # the grace is over: it stopped accepting
            assert not posted.done()
            await lock.rollback()  # the batch goes on: it is answered after its COMMIT, before the process exits
            await blocker.close()
            async with await posted as resp:
                assert resp.status == 200
                reply = await resp.json()
                assert reply == {"received": 5, "inserted": 5, "duplicates": 0, "refused": 0, "unsubscribes": 0}
    except BaseException:
        proc.proc.kill()  # a failure leaves no collector running
        raise
    finally:
        if not blocker.is_closed():
            await blocker.close()  # nor a lock on a table every later test writes
    async with asyncio.timeout(30):
        assert await proc.proc.wait() == 0
    # Committed, waiting for their verdicts (the collector's default hold).
    assert await db.fetchval("SELECT count(*) FROM pending_clicks WHERE campaign_id = $1", campaign_id) == 5
