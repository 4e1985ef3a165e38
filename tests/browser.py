"""A small browser driver for the UI tests: Debian's Chromium, headless, over the DevTools protocol on a pipe.

No pip dependency: with ``--remote-debugging-pipe`` the browser reads commands on its fd 3 and writes replies
and events on its fd 4, each a JSON message ended by a NUL byte. Everything but loopback goes to a proxy that
refuses it, because Chromium calls Google hosts on its own (time, updates, accounts, autofill) and the tests
send nothing beyond loopback; ``Browser.refused`` keeps the request line of each attempt.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import fcntl
import itertools
import json
import os
import shutil
import signal
import tempfile
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

CHROMIUM = "/usr/bin/chromium"
TIMEOUT = 15.0  # seconds, for every reply and every event waited for
FLAGS = [
    "--headless=new",
    "--no-sandbox",  # CI runs as root, where Chromium's sandbox will not start
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--no-default-browser-check",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--disable-default-apps",
    "--disable-extensions",
    "--metrics-recording-only",
    "--mute-audio",
    "--window-size=1280,900",  # pages laid out as on a laptop, in the screenshots too
    "--hide-scrollbars",  # a full-page screenshot lays the page out scrollbar-less: the width must not change
    "--remote-debugging-pipe",
]

JSON = dict[str, Any]


class BrowserError(Exception):
    """The browser refused a command, went away, or did not answer in time."""


class JavaScriptError(BrowserError):
    """A script run by ``Page.evaluate`` (or a method built on it) threw."""


@dataclass(frozen=True)
class Cookie:
    name: str
    value: str
    http_only: bool
    same_site: str | None  # "Strict", "Lax" or "None"; None when the cookie did not say
    secure: bool
    expires: float | None  # Unix time; None for a session cookie


@dataclass
class Navigation:
    """What ``Page.expect_navigation`` saw, filled in when its block has run and the page has loaded."""

    status: int | None = None  # None for a document that came from no HTTP response
    url: str | None = None


class _Connection:
    """Commands out on one pipe; replies and events in on the other, each event to the page of its session."""

    def __init__(
        self, reader: asyncio.StreamReader, pipes: tuple[asyncio.ReadTransport, asyncio.WriteTransport], log: Path
    ) -> None:
        self._reader, self._pipes, self._log = reader, pipes, log
        self._ids = itertools.count(1)
        self._pending: dict[int, asyncio.Future[JSON]] = {}
        self.sessions: dict[str, Page] = {}
        self.gone: BrowserError | None = None
        self._loop = asyncio.get_running_loop()
        self._task = asyncio.create_task(self._read())

    def post(self, method: str, params: JSON | None = None, session: str | None = None) -> int:
        """Send a command without waiting for its reply (a reply nobody waits for is dropped)."""
        if self.gone:
            raise BrowserError(f"{method}: {self.gone}")
        if asyncio.get_running_loop() is not self._loop:  # its reply would never come: nothing reads in this loop
            raise BrowserError(f"{method}: the browser was launched in another event loop (tests/ui/conftest.py)")
        ident = next(self._ids)
        message = {"id": ident, "method": method, "params": params or {}} | ({"sessionId": session} if session else {})
        self._pipes[1].write(json.dumps(message).encode() + b"\0")
        return ident

    async def send(self, method: str, params: JSON | None = None, session: str | None = None) -> JSON:
        ident = self.post(method, params, session)
        reply = self._pending[ident] = asyncio.get_running_loop().create_future()
        try:
            async with asyncio.timeout(TIMEOUT):
                result: JSON = await reply
                return result
        except TimeoutError:
            raise BrowserError(f"{method}: no reply within {TIMEOUT} s") from None
        except BrowserError as exc:
            raise BrowserError(f"{method}: {exc}") from None
        finally:
            del self._pending[ident]

    async def close(self) -> None:
        self._task.cancel()
        await asyncio.gather(self._task, return_exceptions=True)
        for pipe in self._pipes:
            pipe.close()

    async def _read(self) -> None:
        gone = BrowserError("the browser was closed")
        try:
            while True:
                message = json.loads((await self._reader.readuntil(b"\0"))[:-1])
                if "id" not in message:
                    if page := self.sessions.get(message.get("sessionId", "")):
                        page._event(message["method"], message.get("params", {}))
                elif (reply := self._pending.get(message["id"])) and not reply.done():
                    if error := message.get("error"):
                        reply.set_exception(BrowserError(f"{error.get('message')} {error.get('data', '')}".strip()))
                    else:
                        reply.set_result(message.get("result", {}))
        except asyncio.IncompleteReadError:
            gone = BrowserError(f"the browser has gone; its log ends: {self._log.read_text(errors='replace')[-2000:]}")
        except Exception as exc:
            gone = BrowserError(f"reading from the browser failed: {exc!r}")
        finally:  # every waiter hears of it, and nothing waits in vain after
            self.gone = gone
            for reply in self._pending.values():
                if not reply.done():
                    reply.set_exception(gone)
            for page in self.sessions.values():
                page._check()


class Page:
    """A tab in a browser context of its own (its own cookies and storage), recording what went wrong in it."""

    def __init__(self, conn: _Connection, session: str, target: str, context: str) -> None:
        self._conn, self._session, self._target, self._context = conn, session, target, context
        self.console_errors: list[str] = []  # console.error, uncaught exceptions, the browser's errors (CSP, loads)
        self.requests: list[str] = []  # the URL of every request the page made, redirects included
        self.dialogs: list[str] = []  # the message of every alert, confirm and prompt (each dismissed)
        self._frame = target  # Chromium names a tab's main frame after its target
        self._statuses: dict[str, tuple[int, str]] = {}  # loader id -> the main document's HTTP status and URL
        self._committed: list[str] = []  # loader ids of the main frame's documents, in order
        self._loaded: set[str] = set()  # loader ids of those whose load event has fired
        self._waiters: list[tuple[Callable[[], bool], asyncio.Future[None]]] = []
        self._closed = False

    async def _send(self, method: str, params: JSON | None = None) -> JSON:
        return await self._conn.send(method, params, self._session)

    def _event(self, method: str, params: JSON) -> None:
        if method == "Network.requestWillBeSent":
            self.requests.append(params["request"]["url"])
        elif method == "Network.responseReceived" and params["type"] == "Document" and params["frameId"] == self._frame:
            self._statuses[params["loaderId"]] = (params["response"]["status"], params["response"]["url"])
        elif method == "Page.frameNavigated" and "parentId" not in params["frame"]:
            self._committed.append(params["frame"]["loaderId"])
        elif method == "Page.lifecycleEvent" and params["name"] == "load" and params["frameId"] == self._frame:
            self._loaded.add(params["loaderId"])
        elif method == "Page.javascriptDialogOpening":
            self.dialogs.append(params["message"])
            # A dialog blocks the page until answered: dismissed at once (beforeunload accepted, so that the
            # navigation goes ahead). Not awaited: its reply comes through the reader running this.
            accept = params["type"] == "beforeunload"
            self._conn.post("Page.handleJavaScriptDialog", {"accept": accept}, self._session)
        elif method == "Runtime.consoleAPICalled" and params["type"] in ("error", "assert"):
            self.console_errors.append(" ".join(_printed(arg) for arg in params["args"]))
        elif method == "Runtime.exceptionThrown":
            self.console_errors.append(_exception(params["exceptionDetails"]))
        elif method == "Log.entryAdded" and params["entry"]["level"] == "error":
            entry = params["entry"]  # the browser's own: CSP violations, resources that failed to load, ...
            self.console_errors.append(f"{entry['text']} ({entry['url']})" if entry.get("url") else entry["text"])
        self._check()

    def _check(self) -> None:
        """Wake the waiters whose condition the last event made true (all of them if the browser has gone)."""
        for condition, waiter in self._waiters:
            if waiter.done():  # timed out
                continue
            if self._conn.gone:
                waiter.set_exception(self._conn.gone)
            elif condition():
                waiter.set_result(None)
        self._waiters = [(condition, waiter) for condition, waiter in self._waiters if not waiter.done()]

    async def _until(self, condition: Callable[[], bool], what: str) -> None:
        """Wait until the events seen make ``condition`` true."""
        if self._conn.gone:
            raise self._conn.gone
        if condition():
            return
        waiter = asyncio.get_running_loop().create_future()
        self._waiters.append((condition, waiter))
        try:
            async with asyncio.timeout(TIMEOUT):
                await waiter
        except TimeoutError:
            raise BrowserError(f"no {what} within {TIMEOUT} s") from None

    async def goto(self, url: str) -> int:
        """Load ``url``; the main document's HTTP status, once its load event has fired.

        A response with nothing to show (an error status with an empty body) gets Chromium's error page, and its
        status all the same; one that loads no document (204, a download) returns its status at once."""
        result = await self._send("Page.navigate", {"url": url})
        loader: str | None = result.get("loaderId")
        if loader is None:
            raise BrowserError(f"{url}: a navigation within the document, which loads nothing")
        if result.get("errorText"):
            if loader not in self._statuses:  # no HTTP response: refused, unsafe port, ...
                raise BrowserError(f"{url}: {result['errorText']}")
            if result["errorText"] == "net::ERR_ABORTED":
                return self._statuses[loader][0]
        await self._until(lambda: loader in self._loaded, f"load event for {url}")
        if loader not in self._statuses:
            raise BrowserError(f"{url}: the document came from no HTTP response")
        return self._statuses[loader][0]

    @asynccontextmanager
    async def expect_navigation(self) -> AsyncIterator[Navigation]:
        """Around an action that navigates the page (a submit click): at the end, waits for the next document's
        load event, and tells its status and URL."""
        seen, navigation = len(self._committed), Navigation()
        yield navigation
        await self._until(lambda: len(self._committed) > seen, "navigation")
        loader = self._committed[seen]
        await self._until(lambda: loader in self._loaded, "load event after the navigation")
        navigation.status, navigation.url = self._statuses.get(loader, (None, None))

    async def evaluate(self, expression: str) -> Any:
        """The value of a JavaScript expression (a promise awaited), as JSON carries it; raises what it throws."""
        params = {"expression": expression, "returnByValue": True, "awaitPromise": True}
        result = await self._send("Runtime.evaluate", params)
        if "exceptionDetails" in result:
            raise JavaScriptError(_exception(result["exceptionDetails"]))
        return result["result"].get("value")

    async def text(self) -> str:
        """The page's text as rendered (hidden elements left out)."""
        return str(await self.evaluate("document.body.innerText"))

    async def click(self, selector: str) -> None:
        """A mouse click (press, release) in the middle of the first element matching ``selector``."""
        middle = (
            "const r = el.getBoundingClientRect(); return [r.x + r.width / 2, r.y + r.height / 2, r.width * r.height];"
        )
        x, y, area = await self._on(selector, "el.scrollIntoView({block: 'center'}); " + middle)
        if not area:
            raise BrowserError(f"{selector}: not displayed, so it cannot be clicked")
        for kind in ("mousePressed", "mouseReleased"):
            await self._send(
                "Input.dispatchMouseEvent", {"type": kind, "x": x, "y": y, "button": "left", "clickCount": 1}
            )

    async def fill(self, selector: str, value: str) -> None:
        """Replace the value of an input or textarea as typing would: focused, old value selected, new typed."""
        await self._on(selector, "el.focus(); el.select();")
        if value:
            await self._send("Input.insertText", {"text": value})
        else:
            await self._send(
                "Input.dispatchKeyEvent", {"type": "keyDown", "key": "Delete", "commands": ["deleteForward"]}
            )

    async def _on(self, selector: str, body: str) -> Any:
        """Run the function body ``body`` on ``el``, the first element matching ``selector``."""
        quoted = json.dumps(selector)
        missing = f"throw new Error('no element matches ' + {quoted});"
        return await self.evaluate(f"(el => {{ if (!el) {missing} {body} }})(document.querySelector({quoted}))")

    async def screenshot(self, path: Path, *, height: float | None = None, scale: float = 1) -> None:
        """A PNG of the whole page, beyond the viewport too; or of its top ``height`` CSS pixels, at ``scale``."""
        size = (await self._send("Page.getLayoutMetrics"))["cssContentSize"]
        tall = size["height"] if height is None else min(height, size["height"])
        clip = {"x": 0, "y": 0, "width": size["width"], "height": tall, "scale": scale}
        params = {"format": "png", "clip": clip, "captureBeyondViewport": True}
        shot = await self._send("Page.captureScreenshot", params)
        await asyncio.to_thread(path.write_bytes, base64.b64decode(shot["data"]))

    async def cookies(self) -> list[Cookie]:
        """The cookies the browser holds for the page's URL."""
        return [
            Cookie(
                c["name"],
                c["value"],
                c["httpOnly"],
                c.get("sameSite"),
                c["secure"],
                None if c["session"] else c["expires"],
            )
            for c in (await self._send("Network.getCookies"))["cookies"]
        ]

    async def close(self) -> None:
        """Close the tab and drop its browser context (a second call does nothing)."""
        if self._closed:
            return
        self._closed = True
        await self._conn.send("Target.closeTarget", {"targetId": self._target})
        await self._conn.send("Target.disposeBrowserContext", {"browserContextId": self._context})
        del self._conn.sessions[self._session]


def _printed(arg: JSON) -> str:
    """A console argument roughly as the console prints it."""
    return str(arg["value"] if "value" in arg else arg.get("description", arg.get("unserializableValue", arg["type"])))


def _exception(details: JSON) -> str:
    return str(details.get("exception", {}).get("description") or details["text"])


class Browser:
    """A running Chromium. ``Browser.launch()`` starts one; at its end the whole process group is killed and the
    profile removed."""

    def __init__(self, conn: _Connection, pid: int, profile: Path, refused: list[str]) -> None:
        self._conn = conn
        self.pid = pid  # also its process group's id
        self.profile = profile  # the fresh --user-data-dir
        self.refused = refused  # the request line of each connection the refusing proxy took

    @classmethod
    @asynccontextmanager
    async def launch(cls, executable: str = CHROMIUM) -> AsyncIterator[Browser]:
        refused: list[str] = []

        async def refuse(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            try:
                with contextlib.suppress(Exception):  # whatever the client sent, or did not: refused
                    async with asyncio.timeout(TIMEOUT):
                        # The whole head read, so that closing is a clean end of file (unread data would reset).
                        head = await reader.readuntil(b"\r\n\r\n")
                        refused.append(head.split(b"\r\n", 1)[0].decode(errors="replace"))
            finally:
                writer.close()

        proxy = await asyncio.start_server(refuse, "127.0.0.1", 0)
        profile = Path(tempfile.mkdtemp(prefix="clickedge-chromium-"))
        log = profile / "chromium.log"
        # Loopback is not proxied: Chromium bypasses the proxy for it implicitly ("<-loopback>" would not).
        proxy_flag = f"--proxy-server=http://127.0.0.1:{proxy.sockets[0].getsockname()[1]}"
        try:
            pid, we_read, we_write = _spawn([executable, *FLAGS, f"--user-data-dir={profile}", proxy_flag], log)
            try:
                loop = asyncio.get_running_loop()
                reader = asyncio.StreamReader(limit=2**28)  # one message may carry a whole-page screenshot
                protocol = asyncio.StreamReaderProtocol(reader)
                receiving, _ = await loop.connect_read_pipe(lambda: protocol, os.fdopen(we_read, "rb", 0))
                sending, _ = await loop.connect_write_pipe(asyncio.Protocol, os.fdopen(we_write, "wb", 0))
                conn = _Connection(reader, (receiving, sending), log)
                try:
                    await conn.send("Browser.getVersion")  # an answer: the browser is up
                    yield cls(conn, pid, profile, refused)
                finally:
                    await conn.close()
            finally:
                os.killpg(pid, signal.SIGKILL)  # the group holds a zombie at least until waited for: never ESRCH
                await asyncio.to_thread(os.waitpid, pid, 0)
                await _dead(pid)
        finally:
            proxy.close()
            await proxy.wait_closed()
            shutil.rmtree(profile, ignore_errors=True)

    async def new_page(self) -> Page:
        """A blank tab in a new browser context, recording from the start."""
        send = self._conn.send
        context = (await send("Target.createBrowserContext"))["browserContextId"]
        target = (await send("Target.createTarget", {"url": "about:blank", "browserContextId": context}))["targetId"]
        session = (await send("Target.attachToTarget", {"targetId": target, "flatten": True}))["sessionId"]
        page = self._conn.sessions[session] = Page(self._conn, session, target, context)
        for method in ("Page.enable", "Runtime.enable", "Network.enable", "Log.enable"):
            await page._send(method)
        await page._send("Page.setLifecycleEventsEnabled", {"enabled": True})
        return page


async def _dead(group: int) -> None:
    """Wait until no process of the killed group is alive: one still dying (in a write, say) can put files back
    in the profile after it is removed."""
    try:
        async with asyncio.timeout(TIMEOUT):
            while living(group):  # noqa: ASYNC110 - no event tells of a process that is not our child ending
                await asyncio.sleep(0.01)
    except TimeoutError:
        raise BrowserError(f"processes {living(group)} still alive {TIMEOUT} s after SIGKILL") from None


def living(group: int) -> list[int]:
    """The processes of a process group that are alive (zombies, which init reaps in its own time, are not)."""
    found = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            state, _, pgrp = stat.read_text().rsplit(")", 1)[1].split()[:3]
        except OSError:
            continue  # ended meanwhile
        if int(pgrp) == group and state not in ("Z", "X"):
            found.append(int(stat.parent.name))
    return found


def _spawn(args: list[str], log: Path) -> tuple[int, int, int]:
    """Start the browser in a process group of its own, its fds 3 and 4 on two pipes: its pid and our ends."""
    browser_reads, we_write = _pipe()
    we_read, browser_writes = _pipe()
    try:
        pid = os.posix_spawn(
            args[0],
            args,
            os.environ,
            file_actions=[
                (os.POSIX_SPAWN_DUP2, browser_reads, 3),
                (os.POSIX_SPAWN_DUP2, browser_writes, 4),
                (os.POSIX_SPAWN_OPEN, 0, "/dev/null", os.O_RDONLY, 0),
                (os.POSIX_SPAWN_OPEN, 1, str(log), os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600),
                (os.POSIX_SPAWN_DUP2, 1, 2),
            ],
            setsid=True,
        )
    except BaseException:
        os.close(we_read)
        os.close(we_write)
        raise
    finally:
        os.close(browser_reads)  # only the browser may hold its ends, so that its exit is our end of file
        os.close(browser_writes)
    return pid, we_read, we_write


def _pipe() -> tuple[int, int]:
    """A pipe with both ends numbered 10 or more, so that moving the browser's ends to 3 and 4 clobbers neither."""
    low = os.pipe()
    read, write = (fcntl.fcntl(end, fcntl.F_DUPFD_CLOEXEC, 10) for end in low)
    for end in low:
        os.close(end)
    return read, write
