"""The edge runs on uvloop in production (`clickedge edge` starts it with uvloop.run), so its tests do too:
uvloop reads, writes and delivers EOF differently from asyncio's own loop."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable, Mapping
from pathlib import Path

import aiohttp
import pytest
import uvloop

from tests.edge.helpers import RunEdge, edge_runner


def pytest_asyncio_loop_factories(config: pytest.Config, item: pytest.Item) -> Mapping[str, Callable[[], object]]:
    return {"uvloop": uvloop.new_event_loop}


@pytest.fixture
def run_edge(data_dir: Path) -> RunEdge:
    """An in-process edge on a real port, as an async context manager taking EdgeConfig overrides."""
    return edge_runner(data_dir)


@pytest.fixture
async def http() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession() as session:
        yield session
