from __future__ import annotations

from collections.abc import AsyncIterator

import pytest

from tests.faults.harness import kill_leftovers


@pytest.fixture(autouse=True)
async def no_leftover_processes() -> AsyncIterator[None]:
    yield
    await kill_leftovers()
