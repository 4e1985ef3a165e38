"""The rewrite API's tokenizer workers: a hostile message costs only its own worker, a full queue is a
clear 503, and starting or killing a worker never blocks the collector's event loop."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import asyncpg
import pytest
from aiohttp.test_utils import TestClient, TestServer

from collector import apikeys
from collector.app import create_app
from collector.config import CollectorConfig
from collector.tokenizer import answer
from links.token import LINK_PATH
from tests.conftest import INGEST_SECRET, eventually
from tests.faults.harness import CollectorProc, kill_leftovers, wait_http

LEGITIMATE = '<p>Hello</p><a href="https://shop.example.com/pricing">Pricing</a>'
# About 2.5 s of tokenizing on a 2-core machine, far past the 0.3 s deadline the tests set; its tail of
# unclosed "<a " alone took Python 3.11's tokenizer minutes before links/rewrite.py stopped feeding it.
HOSTILE = "<a ]>" * 140_000 + "<a " * 100_000
DEADLINE = 0.3


def children(pid: int) -> set[int]:
    return {int(p) for p in Path(f"/proc/{pid}/task/{pid}/children").read_text().split()}


@pytest.fixture
async def write_key(db: asyncpg.Connection) -> str:
    return await apikeys.create(db, "sender", ["write"])


@pytest.mark.parametrize("workers", [1, 2])
async def test_a_hostile_message_does_not_break_a_concurrent_legitimate_one(
    database_url: str, data_dir: Path, write_key: str, campaign_id: int, workers: int
) -> None:
    assert len(HOSTILE) <= 1 << 20  # within the API's limit: a message any sender may send
    collector = CollectorProc(database_url)
    collector.args += ["--data-dir", str(data_dir)]
    collector.env["CLICKEDGE_COLLECTOR_REWRITE_TIMEOUT"] = str(DEADLINE)
    collector.env["CLICKEDGE_COLLECTOR_REWRITE_WORKERS"] = str(workers)
    await collector.start()
    try:
        await wait_http(f"{collector.url}/readyz")
        url = f"{collector.url}/v1/campaigns/{campaign_id}/rewrite"
        headers = {"Authorization": f"Bearer {write_key}"}
        async with aiohttp.ClientSession() as http:

            async def rewrite(html: str, contact: int) -> tuple[int, dict[str, Any]]:
                async with http.post(url, json={"html": html, "contact_id": contact}, headers=headers) as resp:
                    return resp.status, await resp.json()

            hostile = asyncio.create_task(rewrite(HOSTILE, 1))

            async def tokenizing() -> bool:  # the hostile message has a worker (it holds the only one)
                return bool(children(collector.pid))

            await eventually(tokenizing, timeout=30)
            legitimate = await rewrite(LEGITIMATE, 2)
            status, body = await hostile
        assert status == 400
        assert body["error"] == f"the HTML could not be tokenized within {DEADLINE:g}s"
        assert legitimate[0] == 200, legitimate
        assert f'href="http://127.0.0.1:8080{LINK_PATH}' in legitimate[1]["html"]
        assert [link["destination"] for link in legitimate[1]["links"]] == ["https://shop.example.com/pricing"]
        assert len(children(collector.pid)) <= workers  # the killed worker was reaped, not left behind
    finally:
        await collector.stop()
        await kill_leftovers()


@pytest.fixture
async def api(database_url: str, data_dir: Path) -> AsyncIterator[TestClient[Any, Any]]:
    config = CollectorConfig(
        verdict_hold=0,
        database_url=database_url,
        ingest_secret=INGEST_SECRET,
        data_dir=data_dir,
        rewrite_workers=1,
        rewrite_queue=1,
        rewrite_timeout=DEADLINE,
    )
    async with TestClient(TestServer(create_app(config))) as client:
        yield client


async def test_a_full_queue_is_a_503_naming_the_problem(
    api: TestClient[Any, Any], write_key: str, campaign_id: int
) -> None:
    headers = {"Authorization": f"Bearer {write_key}"}
    url = f"/v1/campaigns/{campaign_id}/rewrite"

    def send(html: str) -> asyncio.Task[aiohttp.ClientResponse]:
        return asyncio.create_task(api.post(url, json={"html": html}, headers=headers))

    # One worker, one place in the queue: the first message takes the worker, the second waits, a third
    # is refused at once. Different messages, so none is answered from the cache.
    busy = send(HOSTILE)
    await eventually(lambda: _waiting_or_running(api, 1))
    queued = send(HOSTILE + " ")
    await eventually(lambda: _waiting_or_running(api, 2))
    refused = await api.post(url, json={"html": LEGITIMATE}, headers=headers)
    assert refused.status == 503
    assert "all 1 tokenizer processes are busy and 1 messages wait" in (await refused.json())["error"]
    assert [(await t).status for t in (busy, queued)] == [400, 400]  # each past its own deadline
    again = await api.post(url, json={"html": LEGITIMATE}, headers=headers)
    assert again.status == 200  # the queue is open again, with a new worker


async def _waiting_or_running(api: TestClient[Any, Any], n: int) -> bool:
    from collector.api import REWRITER

    app = api.app
    assert app is not None
    pool = app[REWRITER].tokenizers
    return bool(pool.running + pool.waiting >= n)


class SlowCallbacks(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.WARNING)
        self.messages: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        message = record.getMessage()
        if message.startswith("Executing "):  # asyncio debug mode: "Executing <Handle …> took 0.2 seconds"
            self.messages.append(message)


@pytest.fixture
async def slow_callbacks() -> AsyncIterator[SlowCallbacks]:
    loop = asyncio.get_running_loop()
    handler = SlowCallbacks()
    logger = logging.getLogger("asyncio")
    logger.addHandler(handler)
    debug, threshold = loop.get_debug(), loop.slow_callback_duration
    loop.set_debug(True)
    loop.slow_callback_duration = 0.1
    try:
        yield handler
    finally:
        loop.set_debug(debug)
        loop.slow_callback_duration = threshold
        logger.removeHandler(handler)


async def test_starting_and_killing_a_worker_does_not_block_the_event_loop(
    slow_callbacks: SlowCallbacks, api: TestClient[Any, Any], write_key: str, campaign_id: int
) -> None:
    assert asyncio.get_running_loop().get_debug()
    headers = {"Authorization": f"Bearer {write_key}"}
    url = f"/v1/campaigns/{campaign_id}/rewrite"
    started = time.monotonic()
    assert (await api.post(url, json={"html": LEGITIMATE}, headers=headers)).status == 200  # starts a worker
    assert (await api.post(url, json={"html": HOSTILE}, headers=headers)).status == 400  # kills it
    assert (await api.post(url, json={"html": LEGITIMATE + " "}, headers=headers)).status == 200  # a new one
    await api.close()  # and the app's cleanup stops the last one
    assert time.monotonic() - started < 60
    assert slow_callbacks.messages == []


def test_the_worker_answers_errors_as_data() -> None:
    kind, value = answer('<a href="https://x.example.com/">x</a><![x]>', None)
    assert kind == "error" and "cannot be tokenized" in value
    kind, value = answer(LEGITIMATE, "see https://shop.example.com/")
    assert kind == "ok" and [slot.part for slot in value.links] == ["html", "text"]
