"""edge/blocklist_sync.py against a real HTTP server on loopback that answers as told: a new list is swapped
in and saved, a 304 changes nothing, and every kind of failure keeps the list held and is counted."""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path

import orjson
import pytest
from aiohttp import web
from aiohttp.test_utils import TestServer

from common.events import EDGE_BLOCKLIST_PATH
from edge.blocklist import Blocklist
from edge.blocklist_sync import BlocklistSync


@dataclass
class Collector:
    """What the fake collector answers next, and what it was asked."""

    status: int = 200
    body: bytes = orjson.dumps({"campaigns": [7], "links": [], "hosts": []})
    etag: str = '"v1"'
    asked: list[dict[str, str]] = field(default_factory=list)


@pytest.fixture
async def collector() -> AsyncIterator[tuple[Collector, TestServer]]:
    state = Collector()

    async def blocklist(request: web.Request) -> web.Response:
        state.asked.append(dict(request.headers))
        if state.status == 200 and request.headers.get("If-None-Match") == state.etag:
            return web.Response(status=304)
        return web.Response(status=state.status, body=state.body, headers={"ETag": state.etag})

    app = web.Application()
    app.router.add_get(EDGE_BLOCKLIST_PATH, blocklist)
    server = TestServer(app)
    await server.start_server()
    yield state, server
    await server.close()


class Held:
    def __init__(self) -> None:
        self.list = Blocklist()
        self.errors = 0

    def sync(self, url: str, path: Path) -> BlocklistSync:
        return BlocklistSync(
            collector_url=url,
            secret="s3cret-s3cret-s3cret",
            path=path,
            apply=self.apply,
            current=lambda: self.list,
            interval=60,
            on_error=self.error,
        )

    def apply(self, new: Blocklist) -> None:
        self.list = new

    def error(self) -> None:
        self.errors += 1


async def test_a_new_list_is_applied_and_saved_and_an_unchanged_one_costs_a_304(
    collector: tuple[Collector, TestServer], tmp_path: Path
) -> None:
    state, server = collector
    held, path = Held(), tmp_path / "blocklist.json"
    sync = held.sync(str(server.make_url("/")), path)
    try:
        assert await sync.fetch()
        assert held.list.campaigns == {7} and held.list.etag == '"v1"' and sync.checked_at > 0
        assert state.asked[0]["Authorization"] == "Bearer s3cret-s3cret-s3cret"
        assert Blocklist.load(path) == held.list
        assert await sync.fetch()
        assert state.asked[1]["If-None-Match"] == '"v1"' and held.list.campaigns == {7}

        # A restart: the saved list is enforced before the collector answers.
        restarted = Held()
        restarted.sync(str(server.make_url("/")), path).load()
        assert restarted.list.campaigns == {7}
    finally:
        await sync.close()


@pytest.mark.parametrize(("status", "body"), [(503, b"{}"), (401, b"{}"), (200, b"not json"), (200, b"[]")])
async def test_a_failed_fetch_keeps_the_list_held(
    collector: tuple[Collector, TestServer], tmp_path: Path, status: int, body: bytes
) -> None:
    state, server = collector
    held = Held()
    held.list = Blocklist(frozenset({9}), etag='"old"')
    state.status, state.body, state.etag = status, body, '"new"'
    sync = held.sync(str(server.make_url("/")), tmp_path / "blocklist.json")
    try:
        assert not await sync.fetch()
        assert held.list.campaigns == {9} and held.errors == 1 and sync.checked_at == 0
    finally:
        await sync.close()


async def test_an_unreachable_collector_and_an_unwritable_data_dir(
    collector: tuple[Collector, TestServer], tmp_path: Path
) -> None:
    _, server = collector
    held = Held()
    gone = held.sync("http://127.0.0.1:9", tmp_path / "blocklist.json")  # the discard port: refused
    try:
        assert not await gone.fetch() and held.errors == 1
    finally:
        await gone.close()
    # A list that cannot be saved is still applied.
    unsaved = held.sync(str(server.make_url("/")), tmp_path / "no-such-dir" / "blocklist.json")
    try:
        assert await unsaved.fetch() and held.list.campaigns == {7}
    finally:
        await unsaved.close()


def test_a_saved_list_that_cannot_be_read_is_left_for_the_collectors(tmp_path: Path) -> None:
    path = tmp_path / "blocklist.json"
    path.write_text('{"campaigns": "all"}')
    held = Held()
    held.sync("http://127.0.0.1:9", path).load()
    assert held.list == Blocklist()
    path.write_text("{truncated")
    held.sync("http://127.0.0.1:9", path).load()
    assert held.list == Blocklist()
