"""Fixtures for the browser tests: one Chromium per module (tests/browser.py), a fresh page per test.

Event loops (pytest-asyncio 1.5, with ``asyncio_default_fixture_loop_scope = "function"`` in pyproject.toml):
the browser's pipes and reader task belong to the loop that launched it, and each test gets a loop of its own
unless told otherwise. So the ``browser`` fixture runs in the module's loop, and so must everything that
touches it: the ``page`` fixture (``loop_scope="module"`` on a function-scoped fixture), any async fixture of
the module's (a server the pages load from), and every test, by declaring at the top of the module::

    pytestmark = pytest.mark.asyncio(loop_scope="module")

Without that line a test runs in a loop of its own, where nothing reads the browser's replies: the first
command it sends fails with "the browser was launched in another event loop".
"""

from __future__ import annotations

import os
import shutil
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
import pytest_asyncio

from tests.browser import CHROMIUM, Browser, Page
from tests.conftest import require

ROOT = Path(__file__).resolve().parents[2]


def need_chromium() -> None:
    require(shutil.which(CHROMIUM) is not None, "Debian's Chromium (apt-get install chromium)")


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def browser() -> AsyncIterator[Browser]:
    """Chromium, launched once for the module; ended (process group killed, profile removed) after it."""
    need_chromium()
    async with Browser.launch() as launched:
        yield launched


@pytest_asyncio.fixture(loop_scope="module")
async def page(browser: Browser) -> AsyncIterator[Page]:
    """A new tab in a browser context of its own (no cookies or storage from another test), closed after."""
    opened = await browser.new_page()
    try:
        yield opened
    finally:
        await opened.close()


@pytest.fixture
def screenshots() -> Path:
    """Where tests put their screenshots: $CLICKEDGE_TEST_OUTPUT/screenshots, else test-output/screenshots."""
    output = os.environ.get("CLICKEDGE_TEST_OUTPUT")
    folder = (Path(output) if output else ROOT / "test-output") / "screenshots"
    folder.mkdir(parents=True, exist_ok=True)
    return folder
