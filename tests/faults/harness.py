"""Real processes for fault tests: PostgreSQL, collectors and edges as `clickedge` subprocesses, a load
driver that remembers which clicks were answered, and the final comparison with PostgreSQL."""

from __future__ import annotations

import asyncio
import contextlib
import os
import random
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import ClassVar

import aiohttp
import asyncpg

from clickedge.pgembed import free_port
from links import keys
from tests.conftest import INGEST_SECRET, require

URL = "https://shop.example.com/landing?utm_source=fault"
LINKS_PER_CONTACT = 10
CHAOS_SEED_ENV = "CLICKEDGE_CHAOS_SEED"


def chaos(name: str) -> random.Random:
    """The random choices of a fault test (when to kill, whom), seeded so a failure can be replayed: from
    CLICKEDGE_CHAOS_SEED, else a fixed seed. The seed is printed, so a failed test's output shows it."""
    seed = int(os.environ.get(CHAOS_SEED_ENV, "1302"))
    print(f"{name}: chaos seed {seed} (replay with {CHAOS_SEED_ENV}={seed})")
    return random.Random(seed)


class Service:
    """A `clickedge` subprocess. Every one started is remembered, so a failed test leaves none behind."""

    started: ClassVar[list[Service]] = []

    def __init__(self, name: str, args: list[str], env: dict[str, str] | None = None) -> None:
        self.name = name
        self.args = args
        self.env = {**os.environ, "CLICKEDGE_INGEST_SECRET": INGEST_SECRET, **(env or {})}
        self.proc: asyncio.subprocess.Process | None = None

    async def start(self) -> None:
        self.proc = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "clickedge", *self.args, env=self.env, start_new_session=True
        )
        Service.started.append(self)

    @property
    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid

    async def stop(self, sig: int = signal.SIGTERM, timeout: float = 30) -> int:
        assert self.proc is not None
        if self.proc.returncode is None:
            self.proc.send_signal(sig)
        async with asyncio.timeout(timeout):
            return await self.proc.wait()

    async def kill(self) -> None:
        await self.stop(signal.SIGKILL)


async def kill_leftovers() -> None:
    """Kill every service a test started and did not stop (its process group: workers too)."""
    while Service.started:
        service = Service.started.pop()
        if service.proc is not None and service.proc.returncode is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(service.proc.pid, signal.SIGKILL)
            await service.proc.wait()


async def wait_http(url: str, *, status: int = 200, timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=2)) as http:
        while True:
            try:
                async with http.get(url) as resp:
                    if resp.status == status:
                        return
            except (aiohttp.ClientError, OSError, TimeoutError):
                pass
            if time.monotonic() > deadline:
                raise AssertionError(f"{url} did not answer {status} within {timeout}s")
            await asyncio.sleep(0.05)  # polling a starting service, with a deadline


class CollectorProc(Service):
    def __init__(self, database_url: str, port: int | None = None) -> None:
        self.port = port or free_port()
        # A short verdict hold: clicks settle (are counted, in the background) a second after they arrive. Full
        # client addresses: these tests check which address the edge recorded, not what privacy keeps of it.
        args = [
            "collector",
            "--collector-port",
            str(self.port),
            "--database-url",
            database_url,
            "--verdict-hold",
            "1",
            "--client-ips",
            "full",
        ]
        super().__init__("collector", args)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"


class EdgeProc(Service):
    def __init__(
        self,
        data_dir: Path,
        collector_port: int,
        *extra: str,
        port: int | None = None,
        env: dict[str, str] | None = None,
    ) -> None:
        self.port = port or free_port()
        super().__init__(
            "edge",
            [
                "edge",
                "--edge-port",
                str(self.port),
                "--data-dir",
                str(data_dir),
                "--collector-url",
                f"http://127.0.0.1:{collector_port}",
                "--batch-linger",
                "0.05",
                "--drain-grace",
                "0",
                *extra,
            ],
            env,
        )

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"


class NotResent(aiohttp.ClientConnectionError):
    """A request whose connection broke, failed rather than sent again (see ``send_once``)."""


async def send_once(request: aiohttp.ClientRequest, handler: aiohttp.ClientHandlerType) -> aiohttp.ClientResponse:
    """A client middleware that sends each request once. aiohttp resends an idempotent request once when a
    kept-alive connection breaks (as browsers do), on ClientOSError or ServerDisconnectedError from below
    its middlewares. When the edge worker died after spooling the first attempt, the second is a second,
    genuine click for the same token, which would look like a duplicate to the fault tests: here it fails
    with an error aiohttp does not resend. (test_edge_faults.py checks that it works.)"""
    try:
        return await handler(request)
    except (aiohttp.ClientOSError, aiohttp.ServerDisconnectedError) as exc:
        raise NotResent(f"{type(exc).__name__}: {exc}") from exc


@dataclass
class Load:
    """Which clicks (contact, link) got a 302, and how the others failed."""

    answered: set[tuple[int, int]] = field(default_factory=set)
    attempted: set[tuple[int, int]] = field(default_factory=set)
    failed: int = 0
    latencies: list[float] = field(default_factory=list)


def tokens(data_dir: Path, campaign_id: int, count: int, first: int = 0) -> list[tuple[tuple[int, int], str]]:
    """Distinct valid tokens, one per contact x link."""
    codec = keys.load(data_dir / "keys.json").codec()
    out = []
    for i in range(first, first + count):
        contact, link = divmod(i, LINKS_PER_CONTACT)
        token = codec.mint(f"{URL}&i={i}", campaign_id=campaign_id, link_id=link, contact_id=contact + 1, sent_at=0)
        out.append(((contact + 1, link), token))
    return out


def token_stream(data_dir: Path, campaign_id: int, first: int = 0) -> Iterator[tuple[tuple[int, int], str]]:
    """Distinct valid tokens, as ``tokens`` makes them, minted as they are taken, without end."""
    while True:
        yield from tokens(data_dir, campaign_id, 100, first)
        first += 100


async def drive(
    base_urls: Iterable[str] | str,
    work: Iterable[tuple[tuple[int, int], str]],
    *,
    concurrency: int = 16,
    load: Load | None = None,
    stop_when_not_ready: bool = False,
    until: asyncio.Event | None = None,
    rng: random.Random | None = None,
) -> Load:
    """Send every click once; remember which got a 302. Bounded: one request per item, 5 s timeout each.

    With ``stop_when_not_ready`` the driver acts as a load balancer would: it checks /readyz every 20 ms
    and sends nothing new once it answers anything but 200. With ``until``, it sends nothing new once that
    is set (for work without end, such as ``token_stream``). ``rng`` picks among several ``base_urls``.
    """
    load = load or Load()
    pick = (rng or chaos("drive")).choice
    urls = [base_urls] if isinstance(base_urls, str) else list(base_urls)
    queue = iter(work)
    stopped = False

    def more() -> tuple[tuple[int, int], str] | None:
        if stopped or (until is not None and until.is_set()):
            return None
        return next(queue, None)

    async def watch() -> None:
        nonlocal stopped
        # A connection of its own, as a load balancer's health checker has.
        async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=10)) as checker:
            while not stopped:
                try:
                    async with checker.get(f"{urls[0]}/readyz") as resp:
                        ok = resp.status == 200
                except (aiohttp.ClientError, OSError, TimeoutError):
                    ok = False
                if not ok:
                    stopped = True
                    return
                await asyncio.sleep(0.02)  # the health check interval of a load balancer

    async def worker(http: aiohttp.ClientSession) -> None:
        while (item := more()) is not None:
            key, token = item
            url = f"{pick(urls)}/c/{token}"
            load.attempted.add(key)
            started = time.perf_counter()
            try:
                async with http.get(url, allow_redirects=False) as resp:
                    await resp.read()
                    if resp.status == 302:
                        load.answered.add(key)
                        load.latencies.append(time.perf_counter() - started)
                    else:
                        load.failed += 1
            except (aiohttp.ClientError, OSError, TimeoutError):
                load.failed += 1

    connector = aiohttp.TCPConnector(limit=concurrency, force_close=False)
    timeout = aiohttp.ClientTimeout(total=5)
    async with aiohttp.ClientSession(connector=connector, timeout=timeout, middlewares=(send_once,)) as http:
        workers = [asyncio.create_task(worker(http)) for _ in range(concurrency)]
        watcher = asyncio.create_task(watch()) if stop_when_not_ready else None
        await asyncio.gather(*workers)
        if watcher is not None:
            stopped = True  # the work is done: the health checker stops too
            await watcher
    return load


async def rows(dsn: str, campaign_id: int) -> list[tuple[int, int]]:
    conn = await asyncpg.connect(dsn)
    try:
        # Stored: settled, or waiting for its verdict (a click is in one or the other; a batch delivered again
        # after its clicks settled waits again, briefly, and is dropped when it settles: UNION counts it once).
        found = await conn.fetch(
            """SELECT contact_id, link_id FROM (
                   SELECT event_id, contact_id, link_id FROM clicks WHERE campaign_id = $1
                   UNION SELECT event_id, contact_id, link_id FROM pending_clicks WHERE campaign_id = $1) stored""",
            campaign_id,
        )
    finally:
        await conn.close()
    return [(r["contact_id"], r["link_id"]) for r in found]


async def assert_exactly_once(
    dsn: str,
    campaign_id: int,
    answered: set[tuple[int, int]],
    *,
    sent: set[tuple[int, int]] | None = None,
    timeout: float = 60,
) -> list[tuple[int, int]]:
    """Every answered click is in PostgreSQL exactly once (waiting for shipping, with a deadline).

    A click can be spooled and then its answer lost (the process died after write(), before the 302 left):
    such a click may be in PostgreSQL too, once, so rows may hold clicks that were sent but not answered.
    """
    deadline = time.monotonic() + timeout
    while True:
        got = await rows(dsn, campaign_id)
        if answered <= set(got) or time.monotonic() > deadline:
            break
        await asyncio.sleep(0.1)  # waiting for the edges to ship, with a deadline
    missing = answered - set(got)
    assert not missing, f"{len(missing)} answered clicks never arrived, e.g. {sorted(missing)[:5]}"
    assert len(got) == len(set(got)), f"{len(got) - len(set(got))} clicks were written twice"
    if sent is not None:
        assert set(got) <= sent, "rows for clicks that were never sent"
    conn = await asyncpg.connect(dsn)
    try:
        while await conn.fetchval("SELECT count(*) FROM pending_clicks WHERE campaign_id = $1", campaign_id):
            assert time.monotonic() < deadline + 30, "clicks still wait for their verdicts"
            await asyncio.sleep(0.1)  # waiting for the settler (the collector's hold), with a deadline
        counted = await conn.fetchval(
            """SELECT coalesce(sum(clicks + scanner_clicks + preview_clicks + script_clicks), 0)
               FROM link_click_counts WHERE campaign_id = $1""",
            campaign_id,
        )
    finally:
        await conn.close()
    assert counted == len(got), f"counters say {counted} clicks, rows say {len(got)}: a click was counted twice"
    return got


async def metric(url: str, name: str, labelled: str = "") -> float:
    """The sum of a metric's series, or only of those whose labels include ``labelled`` (``outcome="failed"``)."""
    async with aiohttp.ClientSession() as http, http.get(f"{url}/metrics") as resp:
        text = await resp.text()
    total = 0.0
    for line in text.splitlines():
        if line.startswith(name) and line[len(name)] in " {" and labelled in line.rsplit(" ", 1)[0]:
            total += float(line.rsplit(" ", 1)[1])
    return total


@contextlib.contextmanager
def tiny_filesystem(size_kib: int) -> Iterator[Path]:
    """A tmpfs of ``size_kib`` KiB, mounted for the test: a disk that really fills up."""
    require(os.geteuid() == 0 and bool(shutil.which("mount")), "root, to mount a tiny tmpfs")
    mount = Path(tempfile.mkdtemp(prefix="clickedge-tinyfs-"))
    subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size_kib}k,mode=0700", "tmpfs", str(mount)], check=True)
    try:
        yield mount
    finally:
        subprocess.run(["umount", "-l", str(mount)], check=False)
        shutil.rmtree(mount, ignore_errors=True)
