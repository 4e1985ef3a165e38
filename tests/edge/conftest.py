"""The edge runs on uvloop in production (`clickedge edge` starts it with uvloop.run), so its tests do too:
uvloop reads, writes and delivers EOF differently from asyncio's own loop."""

from __future__ import annotations

from collections.abc import Callable, Mapping

import pytest
import uvloop


def pytest_asyncio_loop_factories(config: pytest.Config, item: pytest.Item) -> Mapping[str, Callable[[], object]]:
    return {"uvloop": uvloop.new_event_loop}
