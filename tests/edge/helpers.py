"""What the edge's socket-level tests share: an in-process edge on a real port, and its spooled clicks."""

from __future__ import annotations

import tempfile
from collections.abc import AsyncIterator, Callable
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from pathlib import Path
from typing import Any

import orjson

from edge.config import EdgeConfig
from edge.main import RunningEdge, shutdown, start
from links import keys

URL = "https://shop.example.com/pricing?utm_source=news&a=%2F#plans"
RunEdge = Callable[..., AbstractAsyncContextManager[RunningEdge]]


def edge_runner(data_dir: Path) -> RunEdge:
    @asynccontextmanager
    async def run(**overrides: Any) -> AsyncIterator[RunningEdge]:
        # No collector is listening on port 9: clicks stay spooled, where the tests can see them. Each
        # edge gets a spool of its own.
        spool_dir = Path(tempfile.mkdtemp(dir=data_dir, prefix="spool-"))
        fields = {
            "port": 0,
            "data_dir": data_dir,
            "collector_url": "http://127.0.0.1:9",
            "spool_dir": spool_dir,
            **overrides,
        }
        running = await start(EdgeConfig(**fields), reuse_port=False)
        try:
            yield running
        finally:
            await shutdown(running, grace=0, timeout=0)

    return run


def spooled(running: RunningEdge) -> list[list[Any]]:
    """The clicks this edge has spooled (none are shipped: no collector listens on port 9)."""
    batch = running.spool.read(10_000)
    return [[event_id.hex(), *orjson.loads(payload)] for event_id, payload in batch.records]


def mint(data_dir: Path, url: str = URL, contact: int | None = 42) -> str:
    codec = keys.load(data_dir / "keys.json").codec()
    return codec.mint(url, campaign_id=7, link_id=3, contact_id=contact, sent_at=1_790_000_000)


def mint_unsubscribe(data_dir: Path, contact: int = 42) -> str:
    codec = keys.load(data_dir / "keys.json").codec()
    return codec.mint_unsubscribe(campaign_id=7, contact_id=contact, sent_at=1_790_000_000)
