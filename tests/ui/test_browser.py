"""The browser driver (tests/browser.py) against a real aiohttp server on 127.0.0.1.

Every page here declares ``<link rel="icon" href="data:,">``: without it Chromium requests /favicon.ico, which
shows up in ``Page.requests`` and, answered 404, as an error in ``Page.console_errors``. Pages under test
must do the same (or serve a favicon).
"""

from __future__ import annotations

import asyncio
import html
import re
import struct
import time
from collections.abc import AsyncIterator
from pathlib import Path
from urllib.parse import urlencode

import pytest
import pytest_asyncio
from aiohttp import web

from clickedge.pgembed import free_port
from tests import browser as driver
from tests.browser import Browser, BrowserError, JavaScriptError, Page, living
from tests.ui.conftest import need_chromium

pytestmark = pytest.mark.asyncio(loop_scope="module")

HEAD = '<!doctype html><meta charset="utf-8"><link rel="icon" href="data:,"><title>test</title>'
HOSTILE = "<script>alert('owned')</script> & \"quotes\""


# Path -> (body after HEAD, status, headers): the pages that need no handler of their own.
PAGES: dict[str, tuple[str, int, dict[str, str]]] = {
    "/": ("<h1>Clickedge</h1><p>Reports</p><p hidden>not shown</p>", 200, {}),
    "/missing": ("<p>No such report</p>", 404, {}),
    "/form": (
        '<form method="post" action="/submit"><input name="name" value="old"><button>Send</button></form>',
        200,
        {},
    ),
    "/errors": ("<script>console.error('boom', 42); throw new Error('kaput');</script>", 200, {}),
    "/csp": ("<script>window.ran = true;</script>", 200, {"Content-Security-Policy": "script-src 'none'"}),
    "/alert": ("<script>alert('hello <b>');</script><p>after the alert</p>", 200, {}),
    "/external": ('<img src="http://example.invalid/x.png" alt="external">', 200, {}),
    "/tall": ('<div style="height: 3000px; background: linear-gradient(red, blue)"></div>', 200, {}),
    "/stalls": ('<img src="/never" alt="never">', 200, {}),  # its image never comes, so it never loads
}


def page_of(body: str, status: int = 200, headers: dict[str, str] | None = None) -> web.Response:
    return web.Response(text=HEAD + body, status=status, headers=headers, content_type="text/html")


class Site:
    """The pages the tests load, and what the server saw of them."""

    def __init__(self) -> None:
        self.posted: list[str] = []
        self.release = asyncio.Event()  # ends the request that never answers, when the module's tests are done
        self.url = ""

    def app(self) -> web.Application:
        app = web.Application()
        for path in PAGES:
            app.router.add_get(path, self.page)
        app.router.add_get("/empty-404", self.empty_404)
        app.router.add_get("/moved", self.moved)
        app.router.add_get("/no-content", self.no_content)
        app.router.add_post("/submit", self.submit)
        app.router.add_get("/thanks", self.thanks)
        app.router.add_get("/cookie", self.cookie)
        app.router.add_get("/never", self.never)
        app.router.add_get("/slow", self.slow)
        return app

    async def page(self, request: web.Request) -> web.Response:
        body, status, headers = PAGES[request.path]
        return page_of(body, status, headers)

    async def empty_404(self, _: web.Request) -> web.Response:
        return web.Response(status=404)

    async def moved(self, _: web.Request) -> web.Response:
        raise web.HTTPFound("/")

    async def no_content(self, _: web.Request) -> web.Response:
        return web.Response(status=204)

    async def thanks(self, request: web.Request) -> web.Response:
        # An image that takes a while: the page commits well before it loads.
        return page_of(f"<p>Thanks, {html.escape(request.query['name'])}.</p><img src='/slow' alt=''>")

    async def submit(self, request: web.Request) -> web.Response:
        name = str((await request.post())["name"])
        self.posted.append(name)
        raise web.HTTPSeeOther(f"/thanks?{urlencode({'name': name})}")

    async def cookie(self, _: web.Request) -> web.Response:
        response = page_of("<p>Signed in</p>")
        response.set_cookie("session", "s3cret", httponly=True, samesite="Strict")
        response.set_cookie("theme", "dark", max_age=3600, samesite="Lax")
        return response

    async def slow(self, _: web.Request) -> web.Response:
        await asyncio.sleep(0.3)  # latency, not synchronisation: the test waits for the load event either way
        return web.Response(status=204)

    async def never(self, _: web.Request) -> web.Response:
        await self.release.wait()
        return web.Response(status=204)


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def site() -> AsyncIterator[Site]:
    site = Site()
    runner = web.AppRunner(site.app())
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", 0).start()
    site.url = f"http://127.0.0.1:{runner.addresses[0][1]}"
    try:
        yield site
    finally:
        site.release.set()
        await runner.cleanup()


async def test_goto_returns_the_status_of_the_main_document(page: Page, site: Site) -> None:
    assert await page.goto(f"{site.url}/") == 200
    assert await page.goto(f"{site.url}/missing") == 404
    assert await page.goto(f"{site.url}/empty-404") == 404  # Chromium's error page, the status all the same
    assert await page.goto(f"{site.url}/moved") == 200  # the redirect followed: the status of what it led to
    assert page.requests[-2:] == [f"{site.url}/moved", f"{site.url}/"]
    assert await page.goto(f"{site.url}/no-content") == 204  # no document comes, so no load is waited for
    assert await page.text() == "Clickedge\n\nReports"  # the page before stays


async def test_goto_fails_when_nothing_answers(page: Page) -> None:
    with pytest.raises(BrowserError, match="ERR_CONNECTION_REFUSED"):
        await page.goto(f"http://127.0.0.1:{free_port()}/")  # nothing listens


async def test_text_is_what_is_rendered(page: Page, site: Site) -> None:
    await page.goto(f"{site.url}/")
    assert await page.text() == "Clickedge\n\nReports"


async def test_a_form_is_filled_and_submitted(page: Page, site: Site) -> None:
    await page.goto(f"{site.url}/form")
    await page.fill("input[name=name]", HOSTILE)
    async with page.expect_navigation() as navigation:
        await page.click("button")
    assert site.posted[-1] == HOSTILE  # the old value replaced, every character typed
    assert navigation.status == 200
    assert await page.evaluate("document.readyState") == "complete"  # loaded, not only committed
    assert navigation.url is not None and navigation.url.startswith(f"{site.url}/thanks?name=")
    assert await page.text() == f"Thanks, {HOSTILE}."
    assert page.dialogs == []  # escaped by the page: the script in the value did not run
    assert f"{site.url}/submit" in page.requests


async def test_fill_with_nothing_empties_the_field(page: Page, site: Site) -> None:
    await page.goto(f"{site.url}/form")
    await page.fill("input[name=name]", "")
    assert await page.evaluate("document.querySelector('input').value") == ""


async def test_click_and_fill_name_the_selector_that_matched_nothing(page: Page, site: Site) -> None:
    await page.goto(f"{site.url}/form")
    with pytest.raises(JavaScriptError, match="no element matches #absent"):
        await page.click("#absent")
    with pytest.raises(JavaScriptError, match="no element matches textarea"):
        await page.fill("textarea", "x")


async def test_cookies_are_read_back_with_their_flags(page: Page, site: Site) -> None:
    await page.goto(f"{site.url}/cookie")
    cookies = {cookie.name: cookie for cookie in await page.cookies()}
    session, theme = cookies["session"], cookies["theme"]
    assert (session.value, session.http_only, session.same_site, session.secure, session.expires) == (
        "s3cret",
        True,
        "Strict",
        False,
        None,
    )
    assert (theme.http_only, theme.same_site) == (False, "Lax")
    assert theme.expires is not None and abs(theme.expires - (time.time() + 3600)) < 60
    assert await page.evaluate("document.cookie") == "theme=dark"  # HttpOnly: hidden from scripts


async def test_each_page_has_its_own_cookies(page: Page, browser: Browser, site: Site) -> None:
    await page.goto(f"{site.url}/cookie")
    other = await browser.new_page()
    try:
        await other.goto(f"{site.url}/")
        assert await other.cookies() == []
    finally:
        await other.close()


async def test_console_errors_and_uncaught_exceptions_are_recorded(page: Page, site: Site) -> None:
    await page.goto(f"{site.url}/errors")
    assert len(page.console_errors) == 2, page.console_errors
    assert page.console_errors[0] == "boom 42"
    assert page.console_errors[1].startswith("Error: kaput\n")


async def test_a_content_security_policy_violation_is_recorded(page: Page, site: Site) -> None:
    await page.goto(f"{site.url}/csp")
    assert await page.evaluate("window.ran") is None  # blocked...
    assert len(page.console_errors) == 1
    assert "violates the following Content Security Policy directive" in page.console_errors[0]  # ...and told


async def test_evaluate_returns_values_and_raises_what_the_script_throws(page: Page, site: Site) -> None:
    await page.goto(f"{site.url}/")
    assert await page.evaluate("Promise.resolve({a: [1, 'two', null]})") == {"a": [1, "two", None]}
    with pytest.raises(JavaScriptError, match="TypeError: nope"):
        await page.evaluate("throw new TypeError('nope')")
    assert page.console_errors == []  # a test's own script is not the page's error


async def test_dialogs_are_recorded_and_dismissed(page: Page, site: Site) -> None:
    assert await page.goto(f"{site.url}/alert") == 200  # an alert while loading does not block the load
    assert page.dialogs == ["hello <b>"]
    assert await page.text() == "after the alert"
    assert await page.evaluate("confirm('Delete everything?')") is False  # dismissed
    assert page.dialogs == ["hello <b>", "Delete everything?"]


async def test_an_external_request_is_recorded_and_refused(page: Page, browser: Browser, site: Site) -> None:
    assert await page.goto(f"{site.url}/external") == 200
    assert "http://example.invalid/x.png" in page.requests
    assert "GET http://example.invalid/x.png HTTP/1.1" in browser.refused  # sent to the proxy, not the world
    assert await page.evaluate("document.querySelector('img').naturalWidth") == 0  # and it got nothing
    assert len(page.console_errors) == 1
    assert re.fullmatch(
        r"Failed to load resource: net::ERR_\w+ \(http://example\.invalid/x\.png\)", page.console_errors[0]
    )


async def test_waits_are_bounded(page: Page, site: Site, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(driver, "TIMEOUT", 1.0)
    with pytest.raises(BrowserError, match=r"no load event for .*/stalls within 1\.0 s"):
        await page.goto(f"{site.url}/stalls")
    with pytest.raises(BrowserError, match=r"no navigation within 1\.0 s"):
        async with page.expect_navigation():
            pass


async def test_a_screenshot_is_a_png_of_the_whole_page(page: Page, site: Site, screenshots: Path) -> None:
    await page.goto(f"{site.url}/tall")
    path = screenshots / "tall.png"
    path.unlink(missing_ok=True)
    await page.screenshot(path)
    data = path.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    width, height = struct.unpack(">II", data[16:24])  # the IHDR chunk, first after the signature
    sizes = "[document.documentElement.clientWidth, innerWidth, document.documentElement.scrollHeight, innerHeight]"
    page_width, viewport_width, page_height, viewport_height = await page.evaluate(sizes)
    assert page_width == viewport_width  # no scroll bar takes a width the whole-page layout would not have
    assert (width, height) == (page_width, page_height) == (page_width, 3016)  # 3000 px and the body's margins
    assert height > viewport_height  # the whole page, not what the window shows


async def test_launch_leaves_no_process_and_no_profile() -> None:
    need_chromium()
    async with Browser.launch() as launched:
        pid, profile = launched.pid, launched.profile
        assert living(pid)
        assert profile.is_dir()
    assert living(pid) == []
    assert not profile.exists()


async def test_launch_kills_the_whole_process_group(tmp_path: Path) -> None:
    """Chromium ends when its pipe closes; a browser that does not, and has children, is killed all the same."""
    fake = tmp_path / "browser"
    # Starts a child, answers the first command (Browser.getVersion, id 1), and outlives its pipe.
    fake.write_text('#!/bin/sh\nsleep 600 &\nprintf \'{"id": 1, "result": {}}\\000\' >&4\nexec sleep 600\n')
    fake.chmod(0o755)
    async with Browser.launch(str(fake)) as launched:
        assert len(living(launched.pid)) == 2  # the fake and its child
    assert living(launched.pid) == []
